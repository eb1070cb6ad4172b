"""Tokenizers (lab m10 builds byte-level BPE and unigram here; m09 uses the character tokenizer).

Every llmlab tokenizer exports a Hugging Face ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file``
and ``transformers.PreTrainedTokenizerFast`` load and that gives the same ids as llmlab.
"""

from __future__ import annotations

import json
from itertools import pairwise
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


# --- byte-level BPE ----------------------------------------------------------------------------------------
# GPT-2's pre-tokenization pattern (Radford et al. 2019), also what tiktoken's "gpt2" encoding and Hugging Face's
# ByteLevel pre-tokenizer use.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters (vocab.json's alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars), strict=True))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def to_unicode(token: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in token)


def from_unicode(text: str) -> bytes:
    return bytes(CHAR_TO_BYTE[c] for c in text)


def _pattern():
    import regex

    return regex.compile(GPT2_PATTERN)


def _special_splitter(specials: list[str]):
    """A regex splitting text around special tokens (longest first, so overlapping ones resolve greedily)."""
    import regex

    if not specials:
        return None
    alternatives = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
    return regex.compile(f"({alternatives})")


def pretokenize_counts(text: str, specials: list[str] = ()) -> dict[bytes, int]:
    """Counts of GPT-2 pre-tokens (as UTF-8 bytes) in ``text``; special tokens split the text and are not
    counted (they are never merged)."""
    from collections import Counter

    pat, split = _pattern(), _special_splitter(list(specials))
    counts: Counter = Counter()
    for part in (split.split(text) if split else [text]):
        if part and part not in specials:
            counts.update(m.encode("utf-8") for m in pat.findall(part))
    return dict(counts)


def _chunks(text: str, n: int, specials: list[str]) -> list[str]:
    """About n pieces of text cut at newlines (never inside a pre-token or a special token)."""
    if n <= 1 or len(text) < 1_000_000:
        return [text]
    size, out, start = len(text) // n, [], 0
    while start < len(text):
        end = text.find("\n\n", start + size)
        end = len(text) if end < 0 else end + 2
        out.append(text[start:end])
        start = end
    return out


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


# --- unigram LM ----------------------------------------------------------------------------------------
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


# --- the functional API of lab m10 ------------------------------------------------------------------------
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


def viterbi_segment(word: str, log_probs: dict[str, float]) -> list[str]:
    """The segmentation of ``word`` into pieces of ``log_probs`` with the highest total log-probability
    (the unigram LM's encoding). Every single character of ``word`` must be a piece."""
    return UnigramTokenizer._viterbi(word, log_probs, max(map(len, log_probs)))[1]


def __getattr__(name: str):
    if name in ("isotropy", "cosine_similarities"):  # moved where embeddings are
        import warnings

        from llmlab import embeddings

        warnings.warn(f"llmlab.tokenization.{name} moved to llmlab.embeddings.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(embeddings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

