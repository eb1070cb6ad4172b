"""llmlab's byte-level BPE against the baselines a user would pick instead, on ~5 MB of the shared text:

- training with vocabulary 10,000 (and <|endoftext|>) against Hugging Face ``tokenizers``' BpeTrainer
  (Rust), each in its own process so that wall time and peak memory (max RSS, with any worker processes)
  are its own;
- encoding throughput against ``tiktoken`` (Rust) with the same ranks, and Hugging Face ``tokenizers``
  loading llmlab's exported tokenizer.json; both must give llmlab's ids.

Ratios are llmlab / baseline (higher = llmlab slower or bigger).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 10_000
SPECIAL = "<|endoftext|>"
FILES = ["tinystories/tinystories_train_head.txt", "tinystories/tinystories_valid_head.txt",
         "tinyshakespeare/input.txt", "wikitext-2/wiki.valid.tokens", "wikitext-2/wiki.test.tokens"]


def corpus() -> str:
    from llmlab.data import resolve

    return SPECIAL.join(resolve(f).read_text(encoding="utf-8") for f in FILES)


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # Linux reports kB; worker processes counted at their peak


def child(which: str, path: str, out: str) -> None:
    text = Path(path).read_text(encoding="utf-8")
    t0 = time.perf_counter()
    if which == "llmlab":
        from llmlab.tokenization import BPETokenizer

        tok = BPETokenizer.train(text, VOCAB, [SPECIAL])
        seconds = time.perf_counter() - t0
        tok.save(out)
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[SPECIAL], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([text], trainer)
        seconds = time.perf_counter() - t0
        tok.save(str(Path(out) / "tokenizer.json"))
    print(json.dumps({"seconds": seconds, "peak_mb": _peak_mb()}))


def _train(which: str, path: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, __file__, "--child", which, str(path), str(out)], capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _throughput(fn, text: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return len(text.encode("utf-8")) / best / 1e6


def main() -> dict:
    from tokenizers import Tokenizer

    from llmlab.tokenization import BPETokenizer

    text = corpus()
    with tempfile.TemporaryDirectory(prefix="llmlab-bench-") as d:
        path = Path(d) / "corpus.txt"
        path.write_text(text, encoding="utf-8")
        ours = _train("llmlab", path, Path(d) / "llmlab")
        theirs = _train("hf", path, Path(d) / "hf")
        tok = BPETokenizer.load(Path(d) / "llmlab")
        hf_tok = Tokenizer.from_file(str(Path(d) / "llmlab" / "tokenizer.json"))
    tik = tok.to_tiktoken()
    ids = tok.encode(text)
    same = {"tiktoken": tik.encode(text, allowed_special="all") == ids, "tokenizers": hf_tok.encode(text).ids == ids}
    cold = BPETokenizer(tok.merges, tok.special_tokens)  # a fresh cache: the first pass fills it
    t0 = time.perf_counter()
    cold.encode(text)
    cold_mbs = len(text.encode()) / (time.perf_counter() - t0) / 1e6
    enc = {"llmlab_mb_s": _throughput(tok.encode, text), "llmlab_cold_mb_s": cold_mbs,
           "tiktoken_mb_s": _throughput(lambda t: tik.encode(t, allowed_special="all"), text),
           "tokenizers_mb_s": _throughput(lambda t: hf_tok.encode(t), text)}
    return {"name": "tokenizers", "corpus_mb": len(text.encode()) / 1e6, "vocab": VOCAB,
            "train": {"llmlab": ours, "hf_bpe_trainer": theirs, "time_ratio": ours["seconds"] / theirs["seconds"],
                      "memory_ratio": ours["peak_mb"] / theirs["peak_mb"]},
            "encode": {**enc, "ratio_vs_tiktoken": enc["tiktoken_mb_s"] / enc["llmlab_mb_s"]},
            "same_ids": same, "tokens": len(ids)}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        print(json.dumps(main(), indent=2))
