"""A durable vector store: documents and their vectors in SQLite (the log), a FAISS index over them (a cache
of the log, snapshotted to disk), for the retrieval service.

- Nothing acknowledged is lost: ``add`` and ``delete`` commit to SQLite (WAL, synchronous=FULL) before they
  return; the index snapshot ``index-<seq>.faiss`` records the change sequence it holds, and opening the
  store replays every later change from SQLite, so a ``kill -9`` at any point loses nothing.
- An IVF index trains on the documents it is built from: until the store holds enough of them (nlist, and
  256 for PQ's codebooks) searches are exact over SQLite, and the add that reaches that many builds the index.
- Deletions are tombstones (an ID selector at search time; HNSW cannot remove vectors) until ``rebuild``
  compacts them away; a rebuild runs beside searches and is swapped in under the write lock.
- Searches share a read lock (FAISS searches are thread-safe); adds and swaps take the write lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from llmlab.retrieval.index import IndexSpec, empty_index, faiss

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, text TEXT NOT NULL,
    metadata TEXT NOT NULL, vector BLOB NOT NULL, added INTEGER NOT NULL, deleted INTEGER);
CREATE INDEX IF NOT EXISTS docs_added ON docs(added);
CREATE INDEX IF NOT EXISTS docs_deleted ON docs(deleted);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class RWLock:
    """Many readers or one writer; a waiting writer holds new readers back."""

    def __init__(self):
        self._cond, self._readers, self._writer, self._waiting = threading.Condition(), 0, False, 0

    def read(self):
        return _Held(self, write=False)

    def write(self):
        return _Held(self, write=True)


class _Held:
    def __init__(self, lock: RWLock, write: bool):
        self.lock, self.write = lock, write

    def __enter__(self):
        lk = self.lock
        with lk._cond:
            if self.write:
                lk._waiting += 1
                lk._cond.wait_for(lambda: not lk._writer and lk._readers == 0)
                lk._waiting -= 1
                lk._writer = True
            else:
                lk._cond.wait_for(lambda: not lk._writer and lk._waiting == 0)
                lk._readers += 1

    def __exit__(self, *exc):
        lk = self.lock
        with lk._cond:
            if self.write:
                lk._writer = False
            else:
                lk._readers -= 1
            lk._cond.notify_all()


class VectorStore:
    def __init__(self, folder: str | os.PathLike, dim: int, spec: IndexSpec = IndexSpec("hnsw"),
                 search_value: int | None = None):
        self.folder, self.dim, self.spec = Path(folder), dim, spec
        self.search_value = search_value or (spec.search_values[-1] if spec.search_values else None)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.folder / "docs.sqlite", check_same_thread=False, isolation_level=None)
        self._db_lock = threading.RLock()  # one SQLite connection, used by one thread at a time
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        stored = self._meta("dim")
        if stored is not None and int(stored) != dim:
            raise ValueError(f"{self.folder} holds {stored}-dimensional vectors, not {dim}")
        self._set_meta("dim", str(dim))
        self.lock = RWLock()
        self._training = threading.Lock()  # one first build of an IVF index at a time
        self._index, self._tombstones = self._load()

    # --- SQLite ---------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self._rows("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                   (key, value, value))

    def _seq(self) -> int:
        return int(self._meta("seq") or 0)

    def _rows(self, sql: str, args=()) -> list:
        with self._db_lock:
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _change(self):
        """One durable change: the next change number, in a transaction that commits (fsync) on leaving and
        rolls back on an error. Callers hold the write lock through the index update too, so a rebuild's
        replay and the update cannot both add the change."""
        with self._db_lock:
            seq = self._seq() + 1
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield seq
                self._set_meta("seq", str(seq))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # --- the index ------------------------------------------------------------------------------------
    def _empty(self):
        return faiss().IndexIDMap2(empty_index(self.spec, self.dim))

    def _set_knob(self, index) -> None:
        if index is not None and self.spec.knob and self.search_value:
            faiss().ParameterSpace().set_index_parameter(index, self.spec.knob, self.search_value)

    def _snapshots(self) -> list[tuple[int, Path]]:
        return sorted((int(p.stem.split("-")[1]), p) for p in self.folder.glob("index-*.faiss"))

    def _load(self):
        """The latest snapshot, with every change after it replayed from SQLite."""
        snaps = self._snapshots()
        seq, index = (snaps[-1][0], faiss().read_index(str(snaps[-1][1]))) if snaps else (0, None)
        if index is None or not index.is_trained:
            seq = self._seq()
            index = self._build(seq) if self.spec.train_min <= self.size else None
        else:
            self._replay(index, seq)
        self._set_knob(index)
        tombstones = {r[0] for r in self._rows("SELECT id FROM docs WHERE deleted IS NOT NULL AND added <= ?",
                                               (seq,))}
        return index, tombstones

    def _replay(self, index, since: int) -> None:
        rows = self._rows("SELECT id, vector FROM docs WHERE added > ? AND deleted IS NULL ORDER BY id", (since,))
        if rows:
            index.add_with_ids(np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows]),
                               np.array([i for i, _ in rows], dtype=np.int64))

    def _build(self, upto: int):
        """A new index over the live documents added up to change ``upto`` (IVF indexes train on them)."""
        index = self._empty()
        rows = self._rows("SELECT id, vector FROM docs WHERE deleted IS NULL AND added <= ? ORDER BY id", (upto,))
        vectors = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows]) if rows else None
        if not index.is_trained:
            if vectors is None or len(vectors) < self.spec.train_min:
                raise ValueError(f"{self.spec.factory} needs at least {self.spec.train_min} documents to train on")
            index.train(vectors)
        if vectors is not None:
            index.add_with_ids(vectors, np.array([i for i, _ in rows], dtype=np.int64))
        return index

    def snapshot(self) -> Path | None:
        """Writes the index atomically as index-<seq>.faiss (older snapshots removed); None while an IVF
        index waits for enough documents to train on (SQLite holds everything)."""
        with self.lock.read():
            if self._index is None:
                return None
            seq = self._seq()
            path = self.folder / f"index-{seq}.faiss"
            tmp = path.with_suffix(".tmp")
            faiss().write_index(self._index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        for s, old in self._snapshots():
            if s < seq:
                old.unlink(missing_ok=True)
        return path

    def rebuild(self) -> None:
        """Builds a fresh index (tombstones compacted) while searches go on, then swaps it in."""
        with self._db_lock:
            start = self._seq()
        fresh = self._build(start)
        with self.lock.write():
            self._replay(fresh, start)
            self._set_knob(fresh)
            self._index = fresh
            self._tombstones = {r[0] for r in self._rows(
                "SELECT id FROM docs WHERE deleted IS NOT NULL AND deleted > ? AND added <= ?", (start, start))}
        self.snapshot()

    # --- documents ------------------------------------------------------------------------------------
    def add(self, docs: list[dict], vectors: np.ndarray) -> list[int]:
        """Stores documents ({"title", "text", "metadata"}) with their unit vectors; their ids once durable."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(docs), self.dim)
        with self.lock.write():
            with self._change() as seq:
                ids = [self._db.execute("INSERT INTO docs(title, text, metadata, vector, added) VALUES (?, ?, ?, ?, ?)",
                                        (d.get("title", ""), d["text"], json.dumps(d.get("metadata") or {}),
                                         v.tobytes(), seq)).lastrowid for d, v in zip(docs, vectors, strict=True)]
            if self._index is not None:
                self._index.add_with_ids(vectors, np.array(ids, dtype=np.int64))
        if self._index is None and self.size >= self.spec.train_min and self._training.acquire(blocking=False):
            try:  # the first build, beside searches (still exact until it is swapped in)
                self.rebuild()
            except ValueError:  # deletes meanwhile left too few to train on: exact search goes on
                pass
            finally:
                self._training.release()
        return ids

    def delete(self, ids: list[int]) -> list[int]:
        """Marks documents deleted (durably); returns the ids that were live."""
        with self.lock.write():
            with self._change() as seq:
                live = [r[0] for r in self._db.execute(
                    f"SELECT id FROM docs WHERE deleted IS NULL AND id IN ({','.join('?' * len(ids))})", ids)]
                self._db.executemany("UPDATE docs SET deleted = ? WHERE id = ?", [(seq, i) for i in live])
            self._tombstones.update(live)
        return live

    def get(self, ids: list[int]) -> dict[int, dict]:
        rows = self._rows(f"SELECT id, title, text, metadata FROM docs WHERE deleted IS NULL AND id IN "
                          f"({','.join('?' * len(ids))})", list(ids)) if ids else []
        return {r[0]: {"id": r[0], "title": r[1], "text": r[2], "metadata": json.loads(r[3])} for r in rows}

    def vectors(self, ids: list[int]) -> np.ndarray:
        rows = dict(self._rows(f"SELECT id, vector FROM docs WHERE id IN ({','.join('?' * len(ids))})", list(ids)))
        return np.stack([np.frombuffer(rows[i], dtype=np.float32) for i in ids])

    def sample_ids(self, n: int) -> list[int]:
        """Up to ``n`` live document ids drawn at random."""
        return [r[0] for r in self._rows("SELECT id FROM docs WHERE deleted IS NULL ORDER BY RANDOM() LIMIT ?", (n,))]

    @property
    def size(self) -> int:
        return self._rows("SELECT COUNT(*) FROM docs WHERE deleted IS NULL")[0][0]

    def exact(self, queries: np.ndarray, k: int, where: dict | None = None,
              chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the live documents' stored vectors (what the index approximates; metadata equal to
        ``where``), chunk by chunk; (scores, ids), (n, k) each, -1 where fewer than k match."""
        clauses, args = self._where(where)
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(queries), 0), dtype=np.int64)
        last = 0
        while True:
            rows = self._rows(f"SELECT id, vector FROM docs WHERE deleted IS NULL AND id > ?{clauses} ORDER BY id "
                              "LIMIT ?", (last, *args, chunk))
            if not rows:
                break
            last = rows[-1][0]
            ids = np.array([i for i, _ in rows], dtype=np.int64)
            scores = queries @ np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows]).T
            s = np.concatenate([best_s, scores], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        pad = k - best_s.shape[1]  # as FAISS pads: -1 ids
        return (np.pad(best_s, ((0, 0), (0, pad)), constant_values=-np.inf),
                np.pad(best_i, ((0, 0), (0, pad)), constant_values=-1))

    # --- search ---------------------------------------------------------------------------------------
    @staticmethod
    def _where(where: dict | None) -> tuple[str, list]:
        """SQL (" AND ..." clauses, arguments) for metadata fields equal to ``where``'s values."""
        if not where:
            return "", []
        return ("".join(" AND json_extract(metadata, ?) = ?" for _ in where),
                [a for k, v in where.items() for a in (f"$.{k}", v)])

    def _matching(self, where: dict) -> np.ndarray:
        clauses, args = self._where(where)
        return np.array([r[0] for r in self._rows(f"SELECT id FROM docs WHERE deleted IS NULL{clauses}", args)],
                        dtype=np.int64)

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), (n, k) each, -1 where fewer than k live documents match ``where`` (metadata equal)."""
        f = faiss()
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self.lock.read():
            if self._index is None:  # an IVF index not trained yet
                return self.exact(queries, k, where)
            if where:
                selector = f.IDSelectorBatch(self._matching(where))
            elif self._tombstones:
                selector = f.IDSelectorNot(f.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64)))
            else:
                selector = None
            if selector is None:
                return self._index.search(queries, k)
            params = {"hnsw": f.SearchParametersHNSW, "flat": f.SearchParameters}.get(
                self.spec.kind, f.SearchParametersIVF)()
            params.sel = selector
            if self.spec.kind == "hnsw":
                params.efSearch = max(self.search_value or 16, k)
            elif self.spec.kind != "flat":
                params.nprobe = self.search_value or 1
            if self.spec.kind == "ivf_pq_refine":
                # IndexRefine passes its base index only base_index_params, and IndexIDMap2 translates only
                # the top-level selector: the IVF gets the selector translated to its own (sequential) ids here
                translated = f.IDSelectorTranslated(self._index.id_map, selector)
                params.sel = translated
                refine = f.IndexRefineSearchParameters()
                refine.k_factor, refine.base_index_params = self.spec.refine_factor, params
                return self._index.search(queries, k, params=refine)
            return self._index.search(queries, k, params=params)
