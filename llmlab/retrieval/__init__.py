"""Retrieval (lab m16, the retrieval service): the Wikipedia passage corpus, sentence embeddings, FAISS and
BM25 indexes, their fusion, the metrics that judge them, and the math inside them (product quantization,
graph search, contrastive training)."""
