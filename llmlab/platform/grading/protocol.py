"""Frames between the grader and the sandbox: an 8-byte length, then the body.

Grader -> sandbox bodies are pickles (trusted to untrusted; cloudpickle carries the probes by value).
Sandbox -> grader bodies are written with ``torch.save`` and read with ``torch.load(weights_only=True)``:
a restricted unpickler, so a hostile submission that forges a reply can corrupt its own result but cannot
run code in the grader. A reply is then measured before anyone looks at it: pickle's memo lets a few KB
describe a list of lists shared a billion times, and a tensor view with zero strides claims any size, so
replies over ``MAX_REPLY_ELEMENTS`` (tensor elements plus Python objects, shared ones counted each time they
appear) or ``MAX_REPLY_DEPTH`` are refused.

Self-contained (stdlib, torch): it also runs inside the sandbox, where llmlab is not importable.
"""

from __future__ import annotations

import io
import os
import select
import struct
import time
from typing import Any

HEADER = struct.Struct("<Q")
MAX_REPLY_BYTES = 256 * 2**20
MAX_REPLY_ELEMENTS = 32 * 2**20
MAX_REPLY_DEPTH = 32
MAX_REPLY_OBJECTS = 2**20  # distinct lists, tuples and dicts


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


def send_request(fd: int, body: bytes) -> None:
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


def read_request(fd: int) -> bytes:
    (n,) = HEADER.unpack(_read_exact(fd, HEADER.size, None))
    return _read_exact(fd, n, None)


def measure(value: Any, budget: int = MAX_REPLY_ELEMENTS, depth: int = MAX_REPLY_DEPTH) -> int:
    """What ``value`` costs to look at: tensor elements plus containers and scalars, a shared object counted
    at every appearance (as judging code would expand it). Computed over the distinct objects only (memo by
    identity), at most ``MAX_REPLY_OBJECTS`` of them, so measuring is cheap even when the answer is huge.
    Raises ChannelCorrupt past ``budget`` elements, ``depth`` levels, or on a cycle."""
    import torch

    memo: dict[int, tuple[int, int] | None] = {}  # id -> (expanded size, height); None while in progress

    def cost(item: Any, level: int) -> tuple[int, int]:
        if isinstance(item, torch.Tensor):
            return max(item.numel(), 1), 0
        if not isinstance(item, list | tuple | dict):
            return 1, 0
        key = id(item)
        if key in memo:
            if memo[key] is None:
                raise ChannelCorrupt("reply contains a cycle")
            size, height = memo[key]
        else:
            if len(memo) >= MAX_REPLY_OBJECTS:
                raise ChannelCorrupt(f"reply holds more than {MAX_REPLY_OBJECTS} distinct containers")
            memo[key] = None
            size, height = 1 + (len(item) if isinstance(item, dict) else 0), 0
            for child in item.values() if isinstance(item, dict) else item:
                if level + 1 > depth:
                    raise ChannelCorrupt(f"reply nested deeper than {depth} levels")
                s, h = cost(child, level + 1)
                size, height = size + s, max(height, h + 1)
                if size > budget:
                    raise ChannelCorrupt(f"reply holds more than {budget} elements")
            memo[key] = (size, height)
        if level + height > depth:
            raise ChannelCorrupt(f"reply nested deeper than {depth} levels")
        return size, height

    return cost(value, 0)[0]


def read_reply(fd: int, deadline: float, poll=None) -> Any:
    """Read one reply; ``poll`` is called while waiting (the memory watchdog)."""
    import torch

    (n,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline, poll))
    if n > MAX_REPLY_BYTES:
        raise ChannelCorrupt(f"reply of {n} bytes is over the {MAX_REPLY_BYTES} byte limit")
    body = _read_exact(fd, n, deadline, poll)
    try:
        value = torch.load(io.BytesIO(body), weights_only=True)
    except Exception as e:  # any forged or truncated body
        raise ChannelCorrupt(f"unreadable reply ({type(e).__name__})") from None
    measure(value)
    return value
