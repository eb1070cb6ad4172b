"""Uploads: durable writes, and unpacking a .py or .zip submission with limits on files, sizes and paths."""

from __future__ import annotations

import io
import logging
import os
import zipfile
import zlib
from pathlib import Path

from llmlab.platform.submissions.models import SubmissionRejected

log = logging.getLogger(__name__)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def unpack(filename: str, data: bytes, into: Path, max_files: int = 200, max_bytes: int = 20 * 2**20) -> None:
    """Place an upload in ``into``: a .py file as is, or a .zip extracted with every entry checked: names
    (relative, no '..', no drive letters or backslashes, no NUL, one root), real sizes (a header that lies
    is caught while reading, never trusted), CRCs and the deflate stream. Raises SubmissionRejected."""
    into.mkdir(parents=True)
    if filename.endswith(".py"):
        _fsync_write(into / "submission.py", data)
        return
    if not filename.endswith(".zip"):
        raise SubmissionRejected("upload a .py file or a .zip of a folder", 415)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise SubmissionRejected("the .zip is not a valid zip archive") from None
    if not members:
        raise SubmissionRejected("the .zip holds no files")
    if len(members) > max_files or sum(m.file_size for m in members) > max_bytes:
        raise SubmissionRejected(f"the .zip holds more than {max_files} files or {max_bytes} bytes", 413)
    names = [m.filename for m in members]
    for name in names:
        parts = name.split("/")
        if (not name or name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0]
                or any(p in ("", ".", "..") for p in parts)):
            raise SubmissionRejected(f"the .zip has an unsafe or malformed path: {name!r}")
    prefix = os.path.commonpath(names) if len(names) > 1 else os.path.dirname(names[0])
    if prefix and any(n == prefix for n in names):
        prefix = os.path.dirname(prefix)
    total = 0
    for m in members:
        target = into / (os.path.relpath(m.filename, prefix) if prefix else m.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with archive.open(m) as src:
                body = src.read(m.file_size + 1)  # a header that understates the size reads one byte over
        except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError,
                RuntimeError) as e:  # bad CRC, corrupt deflate, encrypted, unsupported compression
            raise SubmissionRejected(f"the .zip entry {m.filename!r} cannot be read: {type(e).__name__}") from None
        total += len(body)
        if len(body) > m.file_size or total > max_bytes:
            raise SubmissionRejected(f"the .zip entry {m.filename!r} is larger than its header says", 413)
        _fsync_write(target, body)
    if not ((into / "submission.py").exists() or (into / "__init__.py").exists()):
        raise SubmissionRejected("the .zip needs submission.py (or __init__.py) at its top level")
