"""The unigram language-model tokenizer (Kudo 2018, lab m10): EM training and Viterbi segmentation."""

from __future__ import annotations

import json
from pathlib import Path

from llmlab.tokenization.pretokenize import (
    BYTE_TO_CHAR,
    _pattern,
    _special_splitter,
    from_unicode,
    pretokenize_counts,
    to_unicode,
)


def _logsumexp(a: float, b: float) -> float:
    import math

    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


class UnigramTokenizer:
    """A unigram language-model tokenizer (Kudo 2018) over byte-level characters: a text is segmented into
    the pieces that maximise the product of their probabilities (Viterbi). Every byte is a piece, so any
    text encodes. Ids: special tokens first, then pieces by decreasing probability."""

    def __init__(self, pieces: dict[str, float], special_tokens: list[str] = ()):
        self.special_tokens = list(dict.fromkeys(special_tokens))
        ordered = sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0]))
        self.pieces = [(s, 0.0) for s in self.special_tokens] + ordered
        self.logp = dict(ordered)
        self.ids = {p: i for i, (p, _) in enumerate(self.pieces)}
        self.special_ids = {s: self.ids[s] for s in self.special_tokens}
        self.max_len = max(len(p) for p in self.logp)
        self._pat, self._split = _pattern(), _special_splitter(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @staticmethod
    def _viterbi(word: str, logp: dict[str, float], max_len: int) -> tuple[float, list[str]]:
        import math

        n = len(word)
        best = [-math.inf] * (n + 1)
        back = [0] * (n + 1)
        best[0] = 0.0
        for end in range(1, n + 1):
            for start in range(max(0, end - max_len), end):
                lp = logp.get(word[start:end])
                if lp is not None and best[start] + lp > best[end]:
                    best[end], back[end] = best[start] + lp, start
        pieces, end = [], n
        while end > 0:
            pieces.append(word[back[end]:end])
            end = back[end]
        return best[n], pieces[::-1]

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: list[str] = (), max_piece_len: int = 16,
              seed_factor: int = 8, shrink: float = 0.75, em_iterations: int = 2,
              progress: bool = False) -> UnigramTokenizer:
        """EM over a seed vocabulary (all bytes and the most frequent substrings of the pre-tokens), pruning
        the pieces whose removal costs the least likelihood until ``vocab_size`` pieces (with the special
        tokens) remain."""
        import math
        from collections import Counter

        specials = list(dict.fromkeys(special_tokens))
        target = vocab_size - len(specials)
        if target < 256:
            raise ValueError(f"vocab_size must be at least 256 + {len(specials)} special tokens")
        words = {to_unicode(w): c for w, c in pretokenize_counts(text, specials).items()}
        base = set(BYTE_TO_CHAR.values())
        subs: Counter = Counter()
        for w, c in words.items():
            for i in range(len(w)):
                for j in range(i + 2, min(len(w), i + max_piece_len) + 1):
                    subs[w[i:j]] += c
        seed = dict(subs.most_common(max(seed_factor * target, 1000)))
        chars: Counter = Counter()
        for w, c in words.items():
            for ch in w:
                chars[ch] += c
        for ch in base:
            seed[ch] = 1 + chars[ch]
        total = sum(seed.values())
        logp = {p: math.log(c / total) for p, c in seed.items()}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc="unigram EM", unit=" rounds")
        while True:
            for _ in range(em_iterations):
                logp = cls._em_step(words, logp, max_piece_len, base)
            if bar is not None:
                bar.update()
                bar.set_postfix(pieces=len(logp))
            if len(logp) <= target:
                break
            logp = cls._prune(words, logp, max_piece_len, base, max(target, int(len(logp) * shrink)))
        if bar is not None:
            bar.close()
        return cls(logp, specials)

    @classmethod
    def _em_step(cls, words: dict[str, int], logp: dict[str, float], L: int, base: set[str]) -> dict[str, float]:
        """One EM step: expected piece counts by forward-backward over every word, then renormalise."""
        import math
        from collections import defaultdict

        expected: dict[str, float] = defaultdict(float)
        for w, c in words.items():
            n = len(w)
            alpha = [-math.inf] * (n + 1)
            alpha[0] = 0.0
            for end in range(1, n + 1):
                for start in range(max(0, end - L), end):
                    lp = logp.get(w[start:end])
                    if lp is not None:
                        alpha[end] = _logsumexp(alpha[end], alpha[start] + lp)
            beta = [-math.inf] * (n + 1)
            beta[n] = 0.0
            for start in range(n - 1, -1, -1):
                for end in range(start + 1, min(n, start + L) + 1):
                    lp = logp.get(w[start:end])
                    if lp is not None:
                        beta[start] = _logsumexp(beta[start], lp + beta[end])
            z = alpha[n]
            for start in range(n):
                for end in range(start + 1, min(n, start + L) + 1):
                    piece = w[start:end]
                    lp = logp.get(piece)
                    if lp is not None:
                        expected[piece] += c * math.exp(alpha[start] + lp + beta[end] - z)
        kept = {p: e for p, e in expected.items() if e > 1e-3}
        for ch in base:  # every byte stays a piece, so any text can be segmented
            kept[ch] = max(kept.get(ch, 0.0), 1e-3)
        total = sum(kept.values())
        return {p: math.log(e / total) for p, e in kept.items()}

    @classmethod
    def _prune(cls, words: dict[str, int], logp: dict[str, float], L: int, base: set[str],
               keep: int) -> dict[str, float]:
        """Drop the pieces whose loss (freq in Viterbi segmentations x the log-probability lost by
        re-segmenting the piece without itself) is smallest; bytes always stay."""
        from collections import Counter

        freq: Counter = Counter()
        for w, c in words.items():
            for piece in cls._viterbi(w, logp, L)[1]:
                freq[piece] += c
        loss = {}
        for p, lp in logp.items():
            if p in base:
                continue
            without = dict(logp)
            del without[p]
            alt, _ = cls._viterbi(p, without, L)
            loss[p] = freq[p] * (lp - alt)
        ranked = sorted(loss, key=lambda p: loss[p], reverse=True)[: max(0, keep - len(base))]
        return {p: logp[p] for p in [*ranked, *base]}

    def _segment(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is None:
            cached = [self.ids[p] for p in self._viterbi(to_unicode(piece.encode("utf-8")), self.logp,
                                                         self.max_len)[1]]
            if len(self._cache) < 200_000:
                self._cache[piece] = cached
        return cached

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for part in (self._split.split(text) if self._split else [text]):
            if part in self.special_ids:
                out.append(self.special_ids[part])
            elif part:
                for piece in self._pat.findall(part):
                    out.extend(self._segment(piece))
        return out

    def decode(self, ids) -> str:
        specials = {i: s for s, i in self.special_ids.items()}
        data = b"".join(specials[i].encode() if i in specials else from_unicode(self.pieces[i][0])
                        for i in map(int, ids))
        return data.decode("utf-8", errors="replace")

    def token_strings(self) -> list[str]:
        return [p for p, _ in self.pieces]

    def to_hf(self):
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.Unigram(list(self.pieces), None, False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        if self.special_tokens:
            tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in self.special_tokens])
        return tok

    def save(self, out_dir) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.to_hf().save(str(out / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000,
                  "llmlab_tokenizer": "unigram", "special_tokens": self.special_tokens}
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        return out / "tokenizer.json"

    @classmethod
    def load(cls, path) -> UnigramTokenizer:
        path = Path(path)
        data = json.loads((path / "tokenizer.json" if path.is_dir() else path).read_text())
        specials = [t["content"] for t in data.get("added_tokens", []) if t.get("special")]
        return cls({p: s for p, s in data["model"]["vocab"] if p not in specials}, specials)


def viterbi_segment(word: str, log_probs: dict[str, float]) -> list[str]:
    """The segmentation of ``word`` into pieces of ``log_probs`` with the highest total log-probability
    (the unigram LM's encoding). Every single character of ``word`` must be a piece."""
    return UnigramTokenizer._viterbi(word, log_probs, max(map(len, log_probs)))[1]
