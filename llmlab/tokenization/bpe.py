"""Byte-level BPE (lab m10): training with incremental pair counts, encoding, decoding, export."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from llmlab.tokenization.pretokenize import (
    GPT2_PATTERN,
    _chunks,
    _pattern,
    _special_splitter,
    from_unicode,
    pretokenize_counts,
    to_unicode,
)


class _Rev:
    """Reverses the order of a value in heapq (a max-heap on lexicographic pairs)."""

    __slots__ = ("v",)

    def __init__(self, v):
        self.v = v

    def __lt__(self, other):
        return self.v > other.v

    def __eq__(self, other):
        return self.v == other.v


class BPETokenizer:
    """Byte-level BPE: ids 0-255 are the bytes, then one id per merge in order, then the special tokens.

    Encoding splits out special tokens (never split or merged), pre-tokenizes with GPT-2's pattern and
    applies the merges by rank, as GPT-2, Hugging Face's BPE and tiktoken do.
    """

    def __init__(self, merges: list[tuple[bytes, bytes]], special_tokens: list[str] = ()):
        self.merges = list(merges)
        self.special_tokens = list(dict.fromkeys(special_tokens))
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for a, b in self.merges:
            self.vocab[len(self.vocab)] = a + b
        self.special_ids = {}
        for s in self.special_tokens:
            self.special_ids[s] = len(self.vocab)
            self.vocab[len(self.vocab)] = s.encode("utf-8")
        self.ids = {tok: i for i, tok in self.vocab.items() if i not in self.special_ids.values()}
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self._pat, self._split = _pattern(), _special_splitter(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # --- training ------------------------------------------------------------------------------------
    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: list[str] = (), workers: int | None = None,
              progress: bool = False) -> BPETokenizer:
        """Learn merges until the vocabulary (256 bytes + merges + special tokens) has ``vocab_size`` entries.

        Pair counts are kept incrementally: a merge updates only the words that contain the merged pair,
        found through an index from pairs to words; the most frequent pair comes off a heap whose stale
        entries are skipped. Ties go to the lexicographically greater pair (of byte strings).
        Pre-tokenization runs in ``workers`` processes for large inputs.
        """
        import heapq
        import os
        from collections import Counter, defaultdict

        specials = list(dict.fromkeys(special_tokens))
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least 256 + {len(specials)} special tokens")
        workers = workers or min(os.cpu_count() or 1, 8)
        pieces = _chunks(text, workers, specials)
        if len(pieces) > 1:
            from concurrent.futures import ProcessPoolExecutor

            counts: Counter = Counter()
            with ProcessPoolExecutor(workers) as pool:
                for part in pool.map(pretokenize_counts, pieces, [specials] * len(pieces)):
                    counts.update(part)
        else:
            counts = Counter(pretokenize_counts(text, specials))
        vocab = {i: bytes([i]) for i in range(256)}
        words = [list(w) for w in counts]
        freqs = list(counts.values())
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for wi, (w, f) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(w):
                pair_counts[pair] += f
                where[pair].add(wi)
        # a max-heap on (count, pair of byte strings): ties go to the lexicographically greater pair
        heap = [(-c, _Rev((vocab[p[0]], vocab[p[1]])), p) for p, c in pair_counts.items()]
        heapq.heapify(heap)
        merges: list[tuple[bytes, bytes]] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_merges, desc="BPE merges", mininterval=1)
        while len(merges) < n_merges and heap:
            neg, _, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg or -neg <= 0:
                continue  # stale entry
            a, b = pair
            new = len(vocab)
            vocab[new] = vocab[a] + vocab[b]
            merges.append((vocab[a], vocab[b]))
            changed: set[tuple[int, int]] = set()
            for wi in list(where.pop(pair, ())):
                w, f = words[wi], freqs[wi]
                for p in pairwise(w):  # remove the word's old pairs
                    pair_counts[p] -= f
                    changed.add(p)
                out, i = [], 0
                while i < len(w):
                    if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                        out.append(new)
                        i += 2
                    else:
                        out.append(w[i])
                        i += 1
                for p in pairwise(w):
                    if p != pair:
                        where[p].discard(wi)
                words[wi] = out
                for p in pairwise(out):  # and add its new ones
                    pair_counts[p] += f
                    where[p].add(wi)
                    changed.add(p)
            pair_counts.pop(pair, None)
            for p in changed:
                c = pair_counts.get(p, 0)
                if c > 0:
                    heapq.heappush(heap, (-c, _Rev((vocab[p[0]], vocab[p[1]])), p))
                elif p in pair_counts:
                    del pair_counts[p]
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        return cls(merges, specials)

    # --- encoding ------------------------------------------------------------------------------------
    def _bpe(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        ranks = self.ranks
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                r = ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best < 0:
                break
            parts[best: best + 2] = [parts[best] + parts[best + 1]]
        ids = [self.ids[p] for p in parts]
        if len(self._cache) < 200_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for part in (self._split.split(text) if self._split else [text]):
            if not part:
                continue
            if part in self.special_ids:
                out.append(self.special_ids[part])
                continue
            for piece in self._pat.findall(part):
                out.extend(self._bpe(piece))
        return out

    def encode_iterable(self, lines):
        """Encode a stream of strings (e.g. an open file) lazily with bounded memory; yields ids equal to
        ``encode`` of the whole text. The last pre-token of each chunk (and any tail that could begin a
        special token) is held back until the next chunk shows where it ends."""
        carry = ""
        for chunk in lines:
            text = carry + chunk
            cut = self._safe_cut(text)
            yield from self.encode(text[:cut])
            carry = text[cut:]
        if carry:
            yield from self.encode(carry)

    def _safe_cut(self, text: str) -> int:
        parts = self._split.split(text) if self._split else [text]
        last = parts[-1]
        offset = len(text) - len(last)
        starts = [m.start() for m in self._pat.finditer(last)]
        cut = offset + (starts[-1] if starts else 0)
        for s in self.special_tokens:  # a tail that may be the start of a special token
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    cut = min(cut, len(text) - k)
                    break
        return cut

    def decode(self, ids) -> str:
        return b"".join(self.vocab[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_strings(self) -> list[str]:
        """Tokens as GPT-2's printable strings (special tokens as they are), in id order."""
        return [s if (s := self._special_name(i)) else to_unicode(self.vocab[i]) for i in range(len(self.vocab))]

    def _special_name(self, i: int) -> str | None:
        for s, sid in self.special_ids.items():
            if sid == i:
                return s
        return None

    # --- files ---------------------------------------------------------------------------------------
    def to_hf(self):
        """The same tokenizer as a Hugging Face ``tokenizers.Tokenizer`` (BPE model, ByteLevel pre-tokenizer
        and decoder, special tokens as added tokens with their ids)."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        vocab = {to_unicode(tok): i for tok, i in self.ids.items()}
        merges = [(to_unicode(a), to_unicode(b)) for a, b in self.merges]
        tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        if self.special_tokens:
            tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in self.special_tokens])
        return tok

    def to_tiktoken(self, name: str = "llmlab"):
        """A ``tiktoken.Encoding`` with the same ranks (ids) and special tokens."""
        import tiktoken

        return tiktoken.Encoding(name, pat_str=GPT2_PATTERN, mergeable_ranks={tok: i for tok, i in self.ids.items()},
                                 special_tokens=dict(self.special_ids))

    def save(self, out_dir) -> Path:
        """tokenizer.json (Hugging Face), GPT-2 style vocab.json + merges.txt, and tokenizer_config.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.to_hf().save(str(out / "tokenizer.json"))
        (out / "vocab.json").write_text(json.dumps({to_unicode(t): i for t, i in self.ids.items()}, ensure_ascii=False))
        (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{to_unicode(a)} {to_unicode(b)}\n"
                                                                    for a, b in self.merges), encoding="utf-8")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000,
                  "llmlab_tokenizer": "bpe", "special_tokens": self.special_tokens}
        if self.special_tokens:
            config["eos_token"] = self.special_tokens[0]
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        return out / "tokenizer.json"

    @property
    def eos_token_id(self) -> int | None:
        return self.special_ids[self.special_tokens[0]] if self.special_tokens else None

    @classmethod
    def from_files(cls, vocab_path, merges_path, special_tokens: list[str] = ()) -> BPETokenizer:
        """Load GPT-2 style vocab.json + merges.txt. The ids of a file whose vocabulary is ordered as bytes,
        then merges (llmlab's own files) are kept; GPT-2's own files order their vocabulary differently,
        and :attr:`file_ids` maps llmlab's ids to the file's."""
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        merges = []
        for line in Path(merges_path).read_text(encoding="utf-8").splitlines():
            if line.startswith("#version") or not line.strip():
                continue
            a, b = line.split(" ")
            merges.append((from_unicode(a), from_unicode(b)))
        specials = list(special_tokens) or [t for t in vocab if t.startswith("<|") and t.endswith("|>")]
        tok = cls(merges, specials)
        file_ids = {}
        for text, i in vocab.items():
            if text in tok.special_ids:
                file_ids[tok.special_ids[text]] = i
            else:
                file_ids[tok.ids[from_unicode(text)]] = i
        tok.file_ids = file_ids
        return tok

    @classmethod
    def load(cls, path) -> BPETokenizer:
        """From a folder (or tokenizer.json) written by :meth:`save`."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        config = json.loads((folder / "tokenizer_config.json").read_text()) \
            if (folder / "tokenizer_config.json").exists() else {}
        return cls.from_files(folder / "vocab.json", folder / "merges.txt", config.get("special_tokens", ()))


def naive_bpe_merges(text: str, vocab_size: int, special_tokens: list[str] = (),
                     ties_to_greater: bool = True) -> list[tuple[bytes, bytes]]:
    """BPE training the obvious way: recount every pair after every merge (quadratic; for checking
    :meth:`BPETokenizer.train`'s incremental counts, and for teaching)."""
    from collections import Counter

    words = {tuple(bytes([b]) for b in w): c for w, c in pretokenize_counts(text, list(special_tokens)).items()}
    merges: list[tuple[bytes, bytes]] = []
    while len(merges) < vocab_size - 256 - len(special_tokens):
        pairs: Counter = Counter()
        for w, c in words.items():
            for p in pairwise(w):
                pairs[p] += c
        if not pairs:
            break
        top = max(pairs.values())
        tied = [p for p, c in pairs.items() if c == top]
        best = max(tied) if ties_to_greater else min(tied)
        merges.append(best)
        merged: dict[tuple[bytes, ...], int] = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        words = merged
    return merges


def compression_ratio(tokenizer, text: str) -> float:
    """UTF-8 bytes per token on ``text``."""
    return len(text.encode("utf-8")) / max(1, len(tokenizer.encode(text)))


def train_bpe(text: str, vocab_size: int, special_tokens: list[str] = ()) -> tuple[dict[int, bytes],
                                                                                   list[tuple[bytes, bytes]]]:
    """Train byte-level BPE: returns (vocab id -> token bytes, merges in order). Ids: 0-255 the bytes, then
    one per merge, then the special tokens. Pre-tokenization is GPT-2's pattern; special tokens split the
    text and are never merged; ties between equally frequent pairs go to the lexicographically greater pair."""
    tok = BPETokenizer.train(text, vocab_size, special_tokens)
    return dict(tok.vocab), list(tok.merges)


def bpe_encode(text: str, merges: list[tuple[bytes, bytes]], special_tokens: list[str] = ()) -> list[int]:
    """Ids of ``text`` under the BPE given by ``merges`` (ids as :func:`train_bpe` numbers them)."""
    return BPETokenizer(merges, special_tokens).encode(text)


def bpe_decode(ids: list[int], vocab: dict[int, bytes]) -> str:
    """The text of ``ids``: the tokens' bytes joined, then decoded as UTF-8 (invalid bytes replaced)."""
    return b"".join(vocab[int(i)] for i in ids).decode("utf-8", errors="replace")
