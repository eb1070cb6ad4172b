"""Frames between the grader and the sandbox: an 8-byte length, then the body.

Grader -> sandbox bodies are pickles (trusted to untrusted). Sandbox -> grader bodies are written with
``torch.save`` and read with ``torch.load(weights_only=True)``: a restricted unpickler, so a hostile
submission that forges a reply can corrupt its own result but cannot run code in the grader.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import struct
import time
from typing import Any

HEADER = struct.Struct("<Q")
MAX_REPLY_BYTES = 256 * 2**20


class ChannelClosed(Exception):
    """The sandbox process went away (exit, crash, kill) before answering."""


class ChannelTimeout(Exception):
    """No complete answer before the deadline."""


class ChannelCorrupt(Exception):
    """The sandbox wrote something that is not a valid reply."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def send_request(fd: int, obj: Any) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, HEADER.pack(len(body)) + body)


def send_reply(fd: int, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    body = buf.getvalue()
    _write_all(fd, HEADER.pack(len(body)) + body)


def _read_exact(fd: int, n: int, deadline: float | None, poll=None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise ChannelTimeout()
            ready, _, _ = select.select([fd], [], [], min(wait, 0.1))
            if not ready:
                if poll is not None:
                    poll()
                continue
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise ChannelClosed()
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_request(fd: int) -> Any:
    (n,) = HEADER.unpack(_read_exact(fd, HEADER.size, None))
    return pickle.loads(_read_exact(fd, n, None))


def read_reply(fd: int, deadline: float, poll=None) -> Any:
    """Read one reply; ``poll`` is called while waiting (the memory watchdog)."""
    import torch

    (n,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline, poll))
    if n > MAX_REPLY_BYTES:
        raise ChannelCorrupt(f"reply of {n} bytes is over the {MAX_REPLY_BYTES} byte limit")
    body = _read_exact(fd, n, deadline, poll)
    try:
        return torch.load(io.BytesIO(body), weights_only=True)
    except Exception as e:  # any forged or truncated body
        raise ChannelCorrupt(f"unreadable reply ({type(e).__name__})") from None
