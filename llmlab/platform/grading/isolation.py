"""The operating system's wall around a submission: bubblewrap (Linux namespaces) and rlimits.

``command()`` wraps the sandbox agent's command line in ``bwrap`` so that the submission runs
- in its own user, PID, network, IPC, UTS and cgroup namespaces: uid 65534 with no capabilities, no network
  at all (not even loopback to the grader's services), and every process it starts dies with the sandbox
  (``--die-with-parent``; PID 1 of the namespace is bubblewrap, and its death kills the rest);
- on a read-only view of the system made of the Python installation and its libraries only: no /home, no
  /root, no /etc beyond what the dynamic loader needs, no data, no databases, no keys; llmlab's own package
  is not mounted (masked by an empty tmpfs where it lies inside site-packages);
- with only its scratch dir writable (``/sandbox``) and a private /tmp, its submission read-only at
  ``/submission``, a new session (no terminal to inject keystrokes into), a cleared environment;
- under rlimits set by the agent (address space, file size, core dumps) and by the grader before exec
  (processes, open files, CPU seconds).

Where bubblewrap or user namespaces are missing (macOS, some locked-down laptops), ``available()`` says why.
``llmlab grade`` of one's own code then runs unisolated with a warning; the grading service and Ray grading
jobs refuse untrusted code unless ``LLMLAB_INSECURE_NO_SANDBOX=1`` says otherwise (documented in the README).
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

INSECURE_ENV = "LLMLAB_INSECURE_NO_SANDBOX"
SANDBOX_UID = 65534
AGENT_DIR = "/opt/llmlab-agent"
SCRATCH = "/sandbox"
SUBMISSION = "/submission"
_HERE = Path(__file__).resolve().parent
AGENT_FILES = ("sandbox.py", "protocol.py")
MAX_PROCESSES = 64
MAX_OPEN_FILES = 256


class IsolationUnavailable(RuntimeError):
    """Untrusted code would run without OS isolation, and nobody said that is acceptable."""


def insecure_allowed() -> bool:
    return os.environ.get(INSECURE_ENV, "") == "1"


@functools.cache
def available() -> str | None:
    """None when bubblewrap can build a sandbox here; otherwise the reason it cannot."""
    if not sys.platform.startswith("linux"):
        return f"OS isolation needs Linux namespaces; this is {sys.platform}"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap; `make system-deps`)"
    probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {probe.stderr.strip()[:300]}"
    return None


def require(untrusted: bool = True) -> bool:
    """Whether to isolate. Raises IsolationUnavailable for untrusted code without isolation unless
    ``LLMLAB_INSECURE_NO_SANDBOX=1``."""
    reason = available()
    if reason is None:
        return True
    if untrusted and not insecure_allowed():
        raise IsolationUnavailable(f"refusing to run untrusted code without OS isolation: {reason}. "
                                   f"Set {INSECURE_ENV}=1 to accept the risk (only for your own code).")
    return False


def _library_roots() -> list[str]:
    """The Python installation and the environment llmlab runs in (read-only inside the sandbox)."""
    roots = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    roots.add(os.path.dirname(os.path.realpath(sys.executable)))
    # the sandbox runs sys.executable by path: its symlink chain must resolve inside
    exe = sys.executable
    while os.path.islink(exe):
        exe = os.path.join(os.path.dirname(exe), os.readlink(exe))
        roots.add(os.path.dirname(os.path.realpath(exe)))
    # nested roots are covered by their parents
    return sorted(r for r in roots if not any(r != o and r.startswith(o + os.sep) for o in roots))


def _llmlab_dir() -> str:
    return str(Path(__file__).resolve().parents[2])  # the llmlab package


def command(agent_args: list[str], *, scratch: Path, submission: Path, expose_llmlab: bool = False,
            env: dict[str, str] | None = None) -> list[str]:
    """The bwrap command line that runs ``python -I AGENT_DIR/sandbox.py *agent_args`` in the sandbox, with
    exactly ``env`` as its environment (bwrap applies --clearenv and --setenv in order, so they follow it).

    As root (CI, containers), bwrap sets up the mounts with root's rights (the Python installation may lie
    under /root) in new mount/PID/net/IPC/UTS namespaces, and ``setpriv`` then drops to host uid 65534
    with no capabilities and no-new-privs: an escape would find itself ``nobody``, and RLIMIT_NPROC holds.
    As any other user, bwrap maps uid 65534 in a new user namespace and drops every capability."""
    bwrap = shutil.which("bwrap")
    root = os.getuid() == 0
    cmd = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if not root:
        cmd += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL"]
    cmd += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
    cmd += [a for k, v in (env or {}).items() for a in ("--setenv", k, v)]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--dir", "/etc"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/usr"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives"):
        if os.path.exists(etc):
            cmd += ["--ro-bind", etc, etc]
    llmlab_dir = _llmlab_dir()
    for lib in _library_roots():
        cmd += ["--ro-bind", lib, lib]
        if not expose_llmlab and llmlab_dir.startswith(lib + os.sep):
            cmd += ["--tmpfs", llmlab_dir]  # a regular (non-editable) install: hide the package
    if expose_llmlab:  # our own reference and seeded bugs only, never a learner's code
        cmd += ["--ro-bind", llmlab_dir, llmlab_dir]
    for name in AGENT_FILES:
        cmd += ["--ro-bind", str(_HERE / name), f"{AGENT_DIR}/{name}"]
    cmd += ["--bind", str(scratch), SCRATCH, "--ro-bind", str(submission), SUBMISSION, "--chdir", SCRATCH,
            "--remount-ro", "/", "--"]
    cmd = _with_parents(cmd)
    if root:
        cmd += [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}",
                "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return cmd + [sys.executable, "-I", "-u", f"{AGENT_DIR}/sandbox.py", *agent_args]


_MOUNTS = {"--ro-bind": 2, "--bind": 2, "--symlink": 2, "--tmpfs": 1, "--dir": 1, "--proc": 1, "--dev": 1}
_ONE_ARG = {"--uid", "--gid", "--hostname", "--chdir", "--remount-ro", "--cap-drop", "--perms"}
_TWO_ARGS = {"--setenv"}


def _with_parents(cmd: list[str]) -> list[str]:
    """bwrap makes missing parents of a mount point 0700 (root's); the sandbox's uid must traverse them, so
    each is made first, world-traversable (``--perms 0755 --dir``)."""
    made, out, i = {"/"}, [], 0
    while i < len(cmd) and cmd[i] != "--":
        n = _MOUNTS.get(cmd[i], 1 if cmd[i] in _ONE_ARG else 2 if cmd[i] in _TWO_ARGS else 0)
        if cmd[i] in _MOUNTS:
            dest = cmd[i + n]
            for parent in reversed(Path(dest).parents):
                if str(parent) not in made:
                    out += ["--perms", "0755", "--dir", str(parent)]
                    made.add(str(parent))
            made.add(dest)
        out += cmd[i:i + n + 1]
        i += n + 1
    return out + cmd[i:]


def prepare(scratch: Path) -> None:
    """Make the scratch dir the sandbox's own (as root the sandbox runs as uid 65534)."""
    if os.getuid() == 0:
        os.chown(scratch, SANDBOX_UID, SANDBOX_UID)
    os.chmod(scratch, 0o700)


def preexec_limits(cpu_seconds: int) -> None:
    """rlimits that every process in the sandbox inherits (set in the child before exec; the process
    count is set by the agent, once it runs as the sandbox's uid)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
