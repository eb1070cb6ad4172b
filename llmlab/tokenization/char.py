"""The character tokenizer (lab m09's models): one id per character seen in training."""

from __future__ import annotations

import json
from pathlib import Path

UNK = "<unk>"


class CharTokenizer:
    """One id per character seen in training, plus ``<unk>`` for the rest."""

    def __init__(self, chars):
        self.itos = sorted(set(chars) - {UNK}) + [UNK]
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.unk_id = self.stoi[UNK]

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, self.unk_id) for c in text]

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def to_hf(self):
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel(self.stoi, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
        tok.decoder = decoders.Fuse()
        return tok

    def save(self, out_dir) -> Path:
        """tokenizer.json (Hugging Face) and tokenizer_config.json into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.to_hf().save(str(out / "tokenizer.json"))
        (out / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": UNK, "model_max_length": 1_000_000,
             "llmlab_tokenizer": "char"}, indent=2))
        return out / "tokenizer.json"

    @classmethod
    def load(cls, path) -> CharTokenizer:
        path = Path(path)
        data = json.loads((path / "tokenizer.json" if path.is_dir() else path).read_text())
        return cls(data["model"]["vocab"].keys())
