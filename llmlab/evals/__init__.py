"""Evaluation: perplexity, MMLU as lm-evaluation-harness scores it (``mmlu``, ``harness``) and benchmark
contamination (``contamination``)."""
