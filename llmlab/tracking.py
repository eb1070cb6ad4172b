"""Experiment logs: reading what Weights & Biases writes offline.

An offline W&B run folder (``wandb/offline-run-*``, uploaded later with ``wandb sync``) keeps everything the
run logged in ``run-<id>.wandb``: a 7-byte header (``:W&B``, a 2-byte magic, a version byte), then an
append-only log in LevelDB's log format: 32 KiB blocks, each holding chunks of a 7-byte header (CRC-32C,
little-endian uint16 length, type) and the payload. A record that fits in the rest of a block is one FULL
chunk (type 1); a longer one is split into FIRST (2), MIDDLE (3)... and LAST (4) chunks over the following
blocks; a block tail shorter than a header is zero padding. Each record is a ``wandb_internal_pb2.Record``
protobuf message; :func:`wandb_history` returns the ``history`` rows (``run.log(...)`` calls).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
WANDB_HEADER = 7  # b":W&B" + magic (2 bytes) + version (1 byte)


def log_records(data: bytes, start: int = 0) -> list[bytes]:
    """The records of a LevelDB-format log that begins at ``data[start]`` (block boundaries count from the
    start of the file). A record cut off at the end of the data is left out."""
    records, partial, pos = [], None, start
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # padding at a block's end
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # zeroed (preallocated) space
            pos += left
            continue
        payload = data[pos + HEADER:pos + HEADER + length]
        if len(payload) < length:
            break
        pos += HEADER + length
        if kind == FULL:
            records.append(payload)
            partial = None
        elif kind == FIRST:
            partial = bytearray(payload)
        elif kind in (MIDDLE, LAST) and partial is not None:
            partial += payload
            if kind == LAST:
                records.append(bytes(partial))
                partial = None
        else:
            raise ValueError(f"bad chunk type {kind} at byte {pos - HEADER - length}")
    return records


def frame_records(records: list[bytes], start: int = 0) -> bytes:
    """The inverse of :func:`log_records` (CRC fields left zero): a log as a writer lays it out from
    file offset ``start``."""
    out, pos = bytearray(), start
    for rec in records:
        first, rest = True, memoryview(rec)
        while True:
            left = BLOCK - pos % BLOCK
            if left < HEADER:
                out += b"\0" * left
                pos += left
                continue
            take = min(len(rest), left - HEADER)
            last = take == len(rest)
            kind = FULL if first and last else FIRST if first else LAST if last else MIDDLE
            out += struct.pack("<IHB", 0, take, kind) + rest[:take]
            pos += HEADER + take
            rest, first = rest[take:], False
            if last:
                break
    return bytes(out)


def wandb_history(run_dir) -> list[dict]:
    """The rows a W&B run logged, read from its offline run folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(Path(run_dir).glob("run-*.wandb")).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{run_dir}: not a W&B run file")
    rows = []
    for raw in log_records(data, WANDB_HEADER):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in rec.history.item})
    return rows
