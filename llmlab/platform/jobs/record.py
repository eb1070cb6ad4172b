"""The result record a job hands back to its submitter, signed.

A job's only channel back that works against any Ray cluster (a local head or a KubeRay head service) is
the Job API's logs, so the job prints exactly one framed line::

    LLMLAB_RESULT v2 <HMAC-SHA256 of the payload, hex> <base64 of the JSON payload>

The MAC's key is a per-deployment secret that the submission's sandbox cannot read: a 0600 file in the
user's config folder locally (created on first use), a Kubernetes Secret mounted into the Ray pods, the
grading service and the operator on a cluster (``LLMLAB_RESULT_KEY_FILE`` names the file). The submitter
accepts the logs only if they hold exactly one line that starts with ``LLMLAB_RESULT``, its MAC is right
and its payload validates against the pydantic schema. The learner's own output never reaches the job's
logs unescaped (the grader keeps it, escaped, inside the payload), so a second record means an attack.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ValidationError

MARK = "LLMLAB_RESULT"
PREFIX = f"{MARK} v2 "
KEY_ENV = "LLMLAB_RESULT_KEY_FILE"


class RecordError(ValueError):
    pass


def key_path() -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV])
    import platformdirs

    return Path(platformdirs.user_config_dir("llmlab")) / "result.key"


def load_key(create: bool = True) -> bytes:
    """The deployment's result key. Locally it is made on first use (0600); a missing key named by
    ``LLMLAB_RESULT_KEY_FILE`` is an error, since a cluster's key must come from its Secret."""
    path = key_path()
    if not path.exists():
        if os.environ.get(KEY_ENV) or not create:
            raise RecordError(f"no result key at {path} ({KEY_ENV})")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return load_key(create=False)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    key = path.read_text().strip().encode()
    if len(key) < 32:
        raise RecordError(f"the result key at {path} is too short (at least 32 characters)")
    return key


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def encode(model: BaseModel, key: bytes | None = None) -> str:
    payload = model.model_dump_json().encode()
    return f"{PREFIX}{_mac(key or load_key(), payload)} {base64.b64encode(payload).decode()}"


def decode(logs: str, schema: type[BaseModel], key: bytes | None = None) -> BaseModel:
    """The one record in ``logs``, its MAC checked, validated against ``schema``."""
    lines = [ln for ln in logs.splitlines() if ln.lstrip().startswith(MARK)]
    if not lines:
        raise RecordError("the job printed no result record")
    if len(lines) > 1:
        raise RecordError(f"the job printed {len(lines)} result records; exactly one is expected (forged?)")
    line = lines[0].strip()
    if not line.startswith(PREFIX):
        raise RecordError(f"the job's result record is not a {PREFIX.strip()} record")
    try:
        mac, b64 = line[len(PREFIX):].split(" ")
        payload = base64.b64decode(b64, validate=True)
    except ValueError:
        raise RecordError("the job's result record is malformed") from None
    if not hmac.compare_digest(mac, _mac(key or load_key(), payload)):
        raise RecordError("the job's result record has a bad MAC (forged, or signed with another key)")
    try:
        return schema.model_validate_json(payload)
    except ValidationError as e:
        raise RecordError(f"the job's result record does not validate: {e.errors()[0]['msg']}") from None
