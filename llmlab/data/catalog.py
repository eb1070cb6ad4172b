"""The course's data sets: the manifest (``datasets.toml``: source, size, SHA-256 and license of every file),
where the files live, checking them and fetching them.

Files are looked up in ``$LLMLAB_DATA_DIR`` when it is set; otherwise in ``shared/data`` beside the checkout
(or ``../shared/data`` from the working directory), then in the user cache folder, where ``fetch`` puts
what it downloads. Downloads go through the Hugging Face Hub client when ``LLMLAB_DATA_HUB_REPO`` names a
dataset repository that mirrors the data folder, else plain HTTPS from each file's canonical source (or
from ``LLMLAB_DATA_MIRROR``, a base URL laid out like the data folder), with resume, progress bars and
checksum verification: a file lands under its name only once its SHA-256 matches.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MANIFEST = Path(__file__).with_name("datasets.toml")
CHUNK = 1 << 16


class FetchError(RuntimeError):
    pass


class ChecksumMismatch(FetchError):
    pass


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data folder
    size: int
    sha256: str
    url: str | None = None  # None: built for llmlab, only on a mirror
    derived: bool = False


@dataclass(frozen=True)
class DataSet:
    name: str
    title: str
    license: str
    used_by: tuple[str, ...]
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@cache
def datasets() -> dict[str, DataSet]:
    raw = tomllib.loads(MANIFEST.read_text())
    return {name: DataSet(name, d["title"], d["license"], tuple(d["used_by"]),
                          tuple(DataFile(**f) for f in d["files"])) for name, d in raw.items()}


def get(name: str) -> DataSet:
    try:
        return datasets()[name]
    except KeyError:
        raise FetchError(f"unknown data set {name!r}; `llmlab data list` shows them: "
                         f"{', '.join(datasets())}") from None


def for_labs(lab_ids) -> list[DataSet]:
    wanted = set(lab_ids)
    return [d for d in datasets().values() if wanted & set(d.used_by)]


def set_of(relative: str) -> str | None:
    """The data set a relative path belongs to."""
    return next((d.name for d in datasets().values() if any(f.path == relative for f in d.files)), None)


# --- where the files are ----------------------------------------------------------------------------------
def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmlab")) / "data"


def roots() -> list[Path]:
    """The folders searched, in order."""
    if os.environ.get("LLMLAB_DATA_DIR"):
        return [Path(os.environ["LLMLAB_DATA_DIR"])]
    repo = Path(__file__).resolve().parents[2]
    shared = [p for p in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data") if p.is_dir()]
    return [*dict.fromkeys(shared), cache_dir()]


def target_dir() -> Path:
    """Where ``fetch`` writes: ``$LLMLAB_DATA_DIR``, else the user cache (never the read-only shared folder)."""
    return Path(os.environ["LLMLAB_DATA_DIR"]) if os.environ.get("LLMLAB_DATA_DIR") else cache_dir()


def locate(relative: str) -> Path | None:
    return next((r / relative for r in roots() if (r / relative).exists()), None)


# --- checking ---------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check(f: DataFile, *, full: bool = True) -> tuple[str, Path | None]:
    """("ok" | "missing" | "wrong size" | "corrupt", where it is); ``full`` hashes it, else sizes only."""
    where = locate(f.path)
    if where is None:
        return "missing", None
    if where.stat().st_size != f.size:
        return "wrong size", where
    if full and sha256(where) != f.sha256:
        return "corrupt", where
    return "ok", where


# --- fetching ---------------------------------------------------------------------------------------------
def fetch(names, *, mirror: str | None = None, hub_repo: str | None = None, revision: str = "main",
          progress: bool = True) -> list[Path]:
    """Download every file of the named sets that is missing or damaged; returns the paths fetched."""
    mirror = mirror or os.environ.get("LLMLAB_DATA_MIRROR")
    hub_repo = hub_repo or os.environ.get("LLMLAB_DATA_HUB_REPO")
    fetched = []
    for name in names:
        for f in get(name).files:
            if check(f)[0] == "ok":
                continue
            dest = target_dir() / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if hub_repo:
                _from_hub(f, hub_repo, revision, dest)
            else:
                url = f"{mirror.rstrip('/')}/{f.path}" if mirror else f.url
                if url is None:
                    raise FetchError(f"{f.path} was built for llmlab (decoded, concatenated or rebuilt from its "
                                     f"public source; see datasets.toml) and has no download of its own: set "
                                     f"LLMLAB_DATA_MIRROR or LLMLAB_DATA_HUB_REPO to a mirror of the data folder")
                _download(url, f, dest, progress)
            fetched.append(dest)
    return fetched


def ensure(lab_ids, **kwargs) -> list[Path]:
    """Fetch what the labs' deliverables need and is not here yet (``make run`` on a fresh machine)."""
    return fetch([d.name for d in for_labs(lab_ids)], **kwargs)


def _verified(part: Path, f: DataFile, dest: Path) -> None:
    """Move ``part`` to ``dest`` if its size and SHA-256 are the manifest's; else delete it and raise."""
    size, digest = part.stat().st_size, sha256(part)
    if size != f.size or digest != f.sha256:
        part.unlink()
        raise ChecksumMismatch(f"{f.path}: got {size} bytes with SHA-256 {digest[:16]}..., expected {f.size} "
                               f"bytes with {f.sha256[:16]}...; the download was deleted")
    os.replace(part, dest)


def _download(url: str, f: DataFile, dest: Path, progress: bool) -> None:
    """HTTP(S) GET into ``dest.part``, resuming a previous partial download with a Range request."""
    from tqdm.auto import tqdm

    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > f.size:  # not a prefix of this file: start afresh
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    if have < f.size:  # (a complete leftover is only verified)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                if have and r.status != 206:  # the server ignored the range: start over
                    have = 0
                with open(part, "ab" if have else "wb") as out, \
                        tqdm(total=f.size, initial=have, unit="B", unit_scale=True, desc=f.path,
                             disable=not progress) as bar:
                    while chunk := r.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                promised = have + int(r.headers.get("Content-Length") or f.size - have)
            if part.stat().st_size < promised:  # the server closed the connection early
                raise ConnectionResetError("the connection closed before the promised length")
        except urllib.error.HTTPError as e:
            raise FetchError(f"{f.path}: {url} answered {e.code} {e.reason}") from None
        except (OSError, ValueError) as e:  # refused, reset, timed out, cut short (http.client.IncompleteRead)
            got = part.stat().st_size if part.exists() else 0
            raise FetchError(f"{f.path}: the download from {url} was interrupted after {got} of {f.size} bytes "
                             f"({type(e).__name__}); run the same command again to resume") from None
    _verified(part, f, dest)


def _from_hub(f: DataFile, repo: str, revision: str, dest: Path) -> None:
    """Through the Hugging Face Hub client (its endpoint, auth, resume and progress bars)."""
    import shutil

    from huggingface_hub import hf_hub_download

    try:
        got = Path(hf_hub_download(repo, f.path, repo_type="dataset", revision=revision))
    except Exception as e:  # the client's own errors: not found, auth, connection
        raise FetchError(f"{f.path}: the Hub repository {repo}@{revision} did not give it: "
                         f"{type(e).__name__}: {str(e)[:300]}") from None
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(got, part)  # out of the Hub cache, then verified like any download
    _verified(part, f, dest)
