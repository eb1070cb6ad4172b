"""From Common Crawl to training tokens (lab m17): WARC/WET records read as a stream (:mod:`.warc`),
deduplication, exact and MinHash-LSH (:mod:`.dedup`), PII masking (:mod:`.pii`). Extraction, quality
filters, sharding and the Ray Data stages come next."""
