"""From Common Crawl to training tokens (lab m17): reading WARC/WET records as a stream (:mod:`.warc`);
extraction, filters, deduplication, sharding and the Ray Data stages come next."""
