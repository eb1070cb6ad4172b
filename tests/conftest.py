import os

import pytest


def needs(tool_ok: bool, reason: str):
    """Skip on a user's machine when a system tool is missing; never skip under CI (CI=true)."""
    if tool_ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ray_address():
    """A real local Ray head on loopback: the one running, or one started for the session (and stopped)."""
    from llmlab.jobs import local

    already = local.is_up(local.default_address())
    address = local.ensure(None)
    yield address
    if not already:
        local.stop_head()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
