"""The Hugging Face bridge: load any llmlab tokenizer folder, or any tokenizer.json through `tokenizers`."""

from __future__ import annotations

import json
from pathlib import Path

from llmlab.tokenization.bpe import BPETokenizer
from llmlab.tokenization.char import CharTokenizer
from llmlab.tokenization.pretokenize import from_unicode
from llmlab.tokenization.unigram import UnigramTokenizer


def load_tokenizer(path):
    """Any llmlab tokenizer folder (or tokenizer.json): char, bpe or unigram, by its tokenizer_config.json."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg = folder / "tokenizer_config.json"
    kind = json.loads(cfg.read_text()).get("llmlab_tokenizer") if cfg.exists() else None
    if kind is None:
        model = json.loads((folder / "tokenizer.json").read_text())["model"]["type"]
        kind = {"BPE": "bpe", "Unigram": "unigram", "WordLevel": "char"}.get(model)
    loaders = {"char": CharTokenizer.load, "bpe": BPETokenizer.load, "unigram": UnigramTokenizer.load}
    if kind not in loaders:
        raise ValueError(f"{path}: not an llmlab tokenizer folder (no tokenizer_config.json or tokenizer.json)")
    return loaders[kind](folder)


class HFTokenizer:
    """Any Hugging Face ``tokenizer.json`` (run by the ``tokenizers`` library) behind llmlab's tokenizer
    interface, for model folders llmlab did not write. The end-of-text id comes from the folder's
    generation_config.json or config.json."""

    def __init__(self, folder):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.eos_token_id = None
        for name in ("generation_config.json", "config.json"):
            if self.eos_token_id is None and (folder / name).exists():
                eos = json.loads((folder / name).read_text()).get("eos_token_id")
                self.eos_token_id = eos[0] if isinstance(eos, list) else eos

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


def model_tokenizer(folder):
    """The tokenizer of a model folder: llmlab's own when llmlab wrote it, else :class:`HFTokenizer` over its
    tokenizer.json; None when the folder has neither."""
    folder = Path(folder)
    cfg = folder / "tokenizer_config.json"
    if cfg.exists() and "llmlab_tokenizer" in json.loads(cfg.read_text()):
        return load_tokenizer(folder)
    return HFTokenizer(folder) if (folder / "tokenizer.json").exists() else None


def vocabulary_strings(path) -> list[str]:
    """Readable token strings of a tokenizer.json / vocab.json (byte-level tokens decoded to text)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json" if (path / "tokenizer.json").exists() else path / "vocab.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"] if "model" in data else data
    tokens = [p for p, _ in vocab] if isinstance(vocab, list) else list(vocab)
    readable = []
    for t in tokens:
        try:
            readable.append(from_unicode(t).decode("utf-8"))
        except (KeyError, UnicodeDecodeError):
            readable.append(t)
    return readable
