import os

import pytest


def needs(tool_ok: bool, reason: str):
    """Skip on a user's machine when a system tool is missing; never skip under CI (CI=true)."""
    if tool_ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install it)")
    pytest.skip(reason)
