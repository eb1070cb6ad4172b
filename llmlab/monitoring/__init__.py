"""Monitoring a live model (lab m19): PromQL's arithmetic (histogram quantiles, counter rates, SLO burn rates),
perplexity drift of served traffic against a reference window, and an exporter that normalizes Triton's,
vLLM's and llmlab's inference metrics."""
