"""Evaluation: perplexity now; MMLU, bias and toxicity with the evaluation lab."""
