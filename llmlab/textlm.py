"""A small byte-level BPE Llama-style LM trained on a text for a time budget and exported as a Hugging Face
folder that llmlab's inference service and eval harness load: m16's RAG reader, m20's notebook model."""

from __future__ import annotations


def train_text_lm(text: str, out_dir, context: int = 512, vocab: int = 2048, seconds: float = 90.0,
                  seed: int = 0) -> dict:
    """A byte-level BPE Llama-style LM (llmlab's own tokenizer and model, d_model 96, 3 layers) trained for
    about ``seconds`` on ``text``, exported to ``out_dir``; returns its size, losses and how many characters a
    token holds."""
    import numpy as np

    from llmlab import hf
    from llmlab.tokenization.bpe import BPETokenizer
    from llmlab.transformer import TrainConfig, TransformerConfig, TransformerLM, evaluate, train

    tok = BPETokenizer.train(text, vocab)
    ids = np.array(tok.encode(text), dtype=np.int64)
    if len(ids) < 20 * context:
        raise ValueError(f"{len(ids):,} tokens of reader text is too little for a {context}-token context")
    split = min(int(0.95 * len(ids)), len(ids) - 4 * context)  # the held-out tail: a few windows at least
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=context, d_model=96, n_layers=3, n_heads=4),
                          seed=seed)
    hist = train(model, ids[:split], ids[split:], TrainConfig(steps=2000, batch_size=4, max_lr=2e-3, warmup=20,
                                                              eval_every=10_000, eval_batches=2, seed=seed),
                 desc="text LM", time_limit_s=seconds)
    hf.export(model, out_dir, tok)
    return {"parameters": sum(p.numel() for p in model.parameters()), "context": context, "vocab": tok.vocab_size,
            "chars_per_token": len(text) / len(ids), "steps": len(hist["step"]),
            "first_loss": float(np.mean(hist["train_loss"][:5])), "last_loss": float(np.mean(hist["train_loss"][-5:])),
            "val_loss": evaluate(model, ids[split:], 4, 4), "seconds": hist["seconds"]}
