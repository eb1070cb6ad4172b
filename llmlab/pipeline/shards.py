"""Token shards: documents tokenized into flat uint16 files with a JSON index, and a loader that streams
each rank its own shards.

A shard is raw little-endian uint16 token ids, a fixed number of them cut from the stream of documents each
followed by the end-of-text id (nanoGPT's and Megatron's ``.bin`` layout without a header, readable with
``np.memmap``). ``index.json``
names the shards of each split with their token and document counts and SHA-256, the vocabulary size and
the end-of-text id. Rank r of w reads shards r, r + w, r + 2w, ... of the training split (so a split needs
at least w shards), in a seeded order that changes every epoch, and cuts random windows from them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

DTYPE = np.dtype("<u2")
INDEX = "index.json"


def write_shards(docs: Iterable[list[int] | np.ndarray], out_dir, shard_tokens: int, eos: int, vocab_size: int,
                 split: str = "train", meta: dict | None = None) -> dict:
    """Write documents' token ids, each followed by ``eos``, as one stream cut into shards of exactly
    ``shard_tokens`` tokens (the last one shorter; a document may continue in the next shard, as in nanoGPT's
    and FineWeb's shards), named ``{split}_00000.bin``, ...; add the split to ``out_dir/index.json``: a list
    of {"file", "tokens", "docs" (documents that end in the shard), "sha256"}, with "dtype": "uint16",
    "vocab_size" and "eos" (and ``meta``) at the top. A vocabulary over 2^16 ids is a ValueError."""
    if vocab_size > 1 << 16:
        raise ValueError(f"a vocabulary of {vocab_size} does not fit in uint16 shards")
    if shard_tokens < 1:
        raise ValueError("shard_tokens must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    if index and (index["vocab_size"], index["eos"]) != (vocab_size, eos):
        raise ValueError("the splits of one index must share the tokenizer")
    index.update({"dtype": "uint16", "vocab_size": vocab_size, "eos": eos, **(meta or {})})
    shards, buf = [], np.zeros(0, dtype=DTYPE)

    def flush(tokens: np.ndarray):
        name = f"{split}_{len(shards):05d}.bin"
        (out / name).write_bytes(tokens.tobytes())
        shards.append({"file": name, "tokens": int(tokens.size), "docs": int((tokens == eos).sum()),
                       "sha256": hashlib.sha256(tokens.tobytes()).hexdigest()})

    for ids in docs:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"token ids must lie in [0, {vocab_size})")
        buf = np.concatenate([buf, np.append(ids, eos).astype(DTYPE)])
        while buf.size >= shard_tokens:
            flush(buf[:shard_tokens])
            buf = buf[shard_tokens:]
    if buf.size:
        flush(buf)
    index.setdefault("splits", {})[split] = shards
    index_path.write_text(json.dumps(index, indent=1))
    return index


def load_index(shard_dir) -> dict:
    return json.loads((Path(shard_dir) / INDEX).read_text())


def read_shard(shard_dir, entry: dict, verify: bool = False) -> np.ndarray:
    """A shard's tokens, memory-mapped (read-only); ``verify`` checks its size and SHA-256 first."""
    path = Path(shard_dir) / entry["file"]
    if verify:
        data = path.read_bytes()
        if len(data) != 2 * entry["tokens"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"{path.name} does not match its index entry (size or SHA-256)")
    return np.memmap(path, dtype=DTYPE, mode="r")


def rank_shards(index: dict, rank: int, world: int, split: str = "train") -> list[dict]:
    """The shards rank ``rank`` of ``world`` reads: every world-th, starting at its rank."""
    shards = index["splits"][split]
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    if len(shards) < world:
        raise ValueError(f"the {split} split has {len(shards)} shards for {world} ranks: write at least one "
                         "shard per rank (a smaller shard_tokens)")
    return shards[rank::world]


def stream_batches(shard_dir, rank: int, world: int, batch: int, context: int, seed: int = 0,
                   split: str = "train") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless (inputs, targets) int64 arrays of shape (batch, context) for one rank: its shards in a
    seeded order (a new order each epoch), ``batch`` random windows from each shard per step until the
    shard's tokens have been drawn once on average, then the next shard."""
    index = load_index(shard_dir)
    mine = [s for s in rank_shards(index, rank, world, split) if s["tokens"] > context]
    if not mine:
        raise ValueError(f"rank {rank} has no shard longer than the context of {context} tokens")
    rng = np.random.default_rng([seed, rank])
    while True:
        for i in rng.permutation(len(mine)):
            tokens = read_shard(shard_dir, mine[i])
            for _ in range(max(1, tokens.size // (batch * context))):
                starts = rng.integers(0, tokens.size - context, batch)
                x = np.stack([tokens[s:s + context] for s in starts]).astype(np.int64)
                y = np.stack([tokens[s + 1:s + 1 + context] for s in starts]).astype(np.int64)
                yield x, y
