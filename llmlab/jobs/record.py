"""The result record a job hands back to its submitter.

A job's only channel back that works against any Ray cluster (a local head or a KubeRay head service) is
the Job API, so the job prints exactly one framed line::

    LLMLAB_RESULT v1 <sha256 of payload> <base64 of the JSON payload>

The submitter takes the line with that exact prefix, checks the digest and validates the payload against
the pydantic schema; anything else in the logs (the learner's prints included) is ignored, and a forged or
truncated record is rejected rather than believed.
"""

from __future__ import annotations

import base64
import hashlib

from pydantic import BaseModel

PREFIX = "LLMLAB_RESULT v1 "


class RecordError(ValueError):
    pass


def encode(model: BaseModel) -> str:
    payload = model.model_dump_json().encode()
    return f"{PREFIX}{hashlib.sha256(payload).hexdigest()} {base64.b64encode(payload).decode()}"


def decode(logs: str, schema: type[BaseModel]) -> BaseModel:
    """The last well-formed record in ``logs``, validated against ``schema``."""
    lines = [ln for ln in logs.splitlines() if ln.startswith(PREFIX)]
    if not lines:
        raise RecordError("the job printed no result record")
    try:
        digest, b64 = lines[-1][len(PREFIX):].split(" ")
        payload = base64.b64decode(b64, validate=True)
    except ValueError:
        raise RecordError("the job's result record is malformed") from None
    if hashlib.sha256(payload).hexdigest() != digest:
        raise RecordError("the job's result record failed its checksum")
    return schema.model_validate_json(payload)
