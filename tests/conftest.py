import os

import pytest

from llmlab.serving import free_port  # noqa: F401  (tests import it from here)

# Drivers this session starts (lab m12's Ray Train run) reach the loopback-only head as 127.0.0.1: Ray reads
# this once, when it is first imported, and would otherwise swap 127.0.0.1 for the machine's address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # as the local head runs (llmlab.platform.jobs.local)

# `make test` runs the suite on every core with pytest-xdist (`-n N --dist loadgroup`). Tests that share an
# expensive module- or session-scoped fixture stay on one worker (a group per module), and all tests of the
# one local Ray head form one group (a session fixture starts and stops it), scheduled first: it is the
# longest unit. The modules listed here are many independent gradings and spread over the workers test by
# test. test_grader_hostile stays one group: its fork bomb exhausts the sandbox uid's process limit, which
# a concurrent sandbox of the same uid would feel.
SPREAD = {"test_labs.py", "test_grader_service_inputs.py", "test_cli.py"}


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # one worker's torch on each core: oversubscribed OpenMP threads spin and crawl
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("ray") is None)  # stable: the Ray group first
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif item.path.name not in SPREAD:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def pytest_runtest_setup(item):
    if item.get_closest_marker("sandbox"):
        needs_isolation()


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
    from llmlab.platform.jobs import local

    already = local.is_up(local.default_address())
    address = local.ensure(None)
    yield address
    if not already:
        local.stop_head()


def prometheus_query(prom: str, expr: str) -> list:
    """The result of an instant query on a real Prometheus (fails the test on a bad query)."""
    import httpx

    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return r.json()["data"]["result"]


def serve_grader(port: int, env: dict):
    """``llmlab serve grader`` as a separate process on 127.0.0.1:port, once its /health answers."""
    from llmlab.serving import start

    return start("grader", env=env, port=port, timeout=60)[0]


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server (Debian's, installed by `make system-deps`) on 127.0.0.1, for the session."""
    import glob
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    needs(bool(bins), "PostgreSQL server binaries not installed (apt-get install postgresql)")
    bindir = os.path.dirname(bins[-1])
    home = Path(tempfile.mkdtemp(prefix="llmlab-pg-"))  # not under pytest's root-only tmp dirs
    data, port, as_user = home / "data", free_port(), []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(home, "postgres")
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(home / "log"), "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={home}", "start")
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    run(f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    shutil.rmtree(home, ignore_errors=True)


# m01 as a learner would hand it in: one self-contained file (llmlab is not importable in the sandbox),
# optionally with a seeded mistake redefining one function after the reference's own.
M01_BUGS = {
    "svd_ascending": "_svd = batched_svd\n\n\ndef batched_svd(A, max_sweeps=60):\n"
                     "    U, S, Vh = _svd(A, max_sweeps)\n    return U.flip(-1), S.flip(-1), Vh.flip(-2)\n",
    "attention_mask_ignored": "_attention = attention\n\n\ndef attention(q, k, v, mask=None):\n"
                              "    return _attention(q, k, v)\n",
}


def m01_source(bug: str | None = None, extra: str = "") -> str:
    from llmlab.labs import get_lab

    return get_lab("m01").standalone_source() + "\n\n" + (M01_BUGS[bug] if bug else "") + extra


def needs_isolation() -> None:
    """Tests of the OS sandbox need bubblewrap and user namespaces (`make system-deps`)."""
    from llmlab.platform.grading import isolation

    why = isolation.available()
    needs(why is None, f"no OS sandbox here: {why}")


TEXT = "the quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!\n"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny character-level model exported as a Hugging Face folder (for the inference service)."""
    from llmlab import hf
    from llmlab.tokenization import CharTokenizer
    from llmlab.transformer import TransformerConfig, TransformerLM

    tok = CharTokenizer.train(TEXT)
    model = TransformerLM(TransformerConfig(tok.vocab_size, context=64, d_model=32, n_heads=2), seed=0)
    return hf.export(model, tmp_path_factory.mktemp("model") / "tiny", tok)


def serve(service: str, *args: str, ready: str = "/health", tries: int = 120):
    """``llmlab serve SERVICE ARGS`` as a separate process on a free 127.0.0.1 port, one OpenMP thread;
    (process, base URL) once ``ready`` answers 200 (``llmlab.serving.start``)."""
    from llmlab.serving import start

    return start(service, *args, ready=ready, timeout=tries / 2, env={"OMP_NUM_THREADS": "1"})


def serve_inference(model_dir, *extra: str, tries: int = 120):
    """``llmlab serve inference --model MODEL_DIR EXTRA`` (see ``serve``)."""
    return serve("inference", "--model", str(model_dir), *extra, tries=tries)
