"""The sandbox process: imports a submission under limits and answers the grader's calls.

Run by ``runner`` as ``python -I -m llmlab.grading.sandbox``; never imported by the grader itself.

Limits, in the order they are put in place:
- stdout/stderr go to files in the sandbox dir, capped by RLIMIT_FSIZE (bulk writes fail with EFBIG);
- the heavy libraries the checks need are imported first, then RLIMIT_AS caps memory;
- a Python audit hook (``sys.addaudithook``, which cannot be removed) refuses file access outside the
  sandbox dir, the submission and the Python installation, and refuses new processes, signals to other
  processes, sockets, ctypes and changes to resource limits.
The audit hook is a Python-level policy: it stops broken and careless submissions and casual hostility.
The grader adds what the process cannot undo itself: a wall-clock deadline per call, a memory watchdog on
the process's RSS, and a kill of the whole process group.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import resource
import signal
import sys
import traceback

from llmlab.grading import protocol
from llmlab.labs.base import to_wire

OUTPUT_LIMIT_BYTES = 8 * 2**20

_DENIED_EVENTS = {
    "subprocess.Popen": "starting processes",
    "os.system": "starting processes",
    "os.exec": "starting processes",
    "os.posix_spawn": "starting processes",
    "os.spawn": "starting processes",
    "os.fork": "starting processes",
    "os.forkpty": "starting processes",
    "pty.spawn": "starting processes",
    "os.kill": "sending signals",
    "os.killpg": "sending signals",
    "signal.pthread_kill": "sending signals",
    "socket.connect": "network access",
    "socket.bind": "network access",
    "socket.sendto": "network access",
    "socket.getaddrinfo": "network access",
    "ctypes.dlopen": "loading native code",
    "ctypes.dlsym": "loading native code",
    "ctypes.call_function": "loading native code",
    "resource.setrlimit": "changing resource limits",
    "resource.prlimit": "changing resource limits",
    "sys.addaudithook": "installing audit hooks",
    "sys.settrace": "tracing the grader",
    "sys.setprofile": "tracing the grader",
}
# events whose first argument is a path; allowed only inside the writable or readable roots
_PATH_EVENTS = {
    "os.listdir": "read", "os.scandir": "read", "os.chdir": "read", "glob.glob": "read",
    "os.remove": "write", "os.rename": "write", "os.rmdir": "write", "os.mkdir": "write",
    "os.chmod": "write", "os.chown": "write", "os.link": "write", "os.symlink": "write",
    "os.truncate": "write", "os.utime": "write", "shutil.rmtree": "write", "shutil.copyfile": "write",
    "shutil.move": "write", "os.chflags": "write", "os.setxattr": "write", "os.removexattr": "write",
}


class SandboxViolation(PermissionError):
    pass


def _install_policy(write_roots: tuple[str, ...], read_roots: tuple[str, ...]) -> None:
    def inside(path, roots) -> bool:
        if isinstance(path, int):  # an already-open file descriptor
            return True
        try:
            real = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return any(real == r or real.startswith(r + os.sep) for r in roots)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None:
                return
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                flags is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            )
            roots = write_roots if writing else read_roots
            if not inside(path, roots):
                raise SandboxViolation(
                    f"sandbox: {'writing' if writing else 'reading'} {path!r} is outside the sandbox dir"
                )
        elif event in _PATH_EVENTS:
            roots = write_roots if _PATH_EVENTS[event] == "write" else read_roots
            for p in args[:2]:
                if isinstance(p, str | bytes | os.PathLike) and not inside(p, roots):
                    raise SandboxViolation(f"sandbox: {event} on {p!r} is outside the sandbox dir")
        elif event in _DENIED_EVENTS:
            raise SandboxViolation(f"sandbox: {_DENIED_EVENTS[event]} is not allowed ({event})")

    sys.addaudithook(hook)


def _load_submission(path: str):
    path = os.path.realpath(path)
    if os.path.isdir(path):
        sys.path.insert(0, path)
        for name in ("submission.py", "__init__.py"):
            if os.path.exists(os.path.join(path, name)):
                file = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError(f"folder {path} has neither submission.py nor __init__.py")
    else:
        sys.path.insert(0, os.path.dirname(path))
        file = path
    spec = importlib.util.spec_from_file_location("submission", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules["submission"] = module
    spec.loader.exec_module(module)
    return module


def _resolve(qualname: str):
    mod, _, attr = qualname.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _describe(exc: BaseException) -> dict:
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG from RLIMIT_FSIZE
        message = f"wrote more than {OUTPUT_LIMIT_BYTES // 2**20} MB of output (output limit)"
    elif isinstance(exc, SystemExit):
        message = f"the submission called sys.exit({exc.code!r})"
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # the innermost frames that belong to the submission, for the learner
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "llmlab" not in f.filename]
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return {"ok": False, "error": message[:2000] + where, "type": type(exc).__name__}


def main() -> None:
    cfg = json.loads(sys.argv[1])
    req_fd, rep_fd = cfg["req_fd"], cfg["rep_fd"]
    sandbox_dir = os.path.realpath(cfg["sandbox_dir"])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long output fails with EFBIG, not death
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    import torch  # preload what the probes need before memory is capped

    torch.set_num_threads(1)
    for name in cfg["preload"]:
        importlib.import_module(name)

    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    cap = vm + cfg["memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    submission_path = os.path.realpath(cfg["submission"])
    submission_root = submission_path if os.path.isdir(submission_path) else os.path.dirname(submission_path)
    python_roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    library_roots = {os.path.dirname(os.path.dirname(os.path.realpath(torch.__file__)))}
    import llmlab

    library_roots.add(os.path.dirname(os.path.realpath(llmlab.__file__)))
    os.chdir(sandbox_dir)
    _install_policy(
        write_roots=(sandbox_dir,),
        read_roots=tuple(sorted({sandbox_dir, submission_root, "/dev/null", "/dev/urandom"}
                                | python_roots | library_roots)),
    )

    try:
        module = _load_submission(submission_path)
        protocol.send_reply(rep_fd, {"ok": True, "names": sorted(n for n in vars(module) if not n.startswith("_"))})
    except BaseException as e:  # noqa: BLE001 - a broken submission is reported, not raised
        reply = _describe(e)
        reply["stage"] = "import"
        protocol.send_reply(rep_fd, reply)
        return

    while True:
        try:
            request = protocol.read_request(req_fd)
        except protocol.ChannelClosed:
            return
        probe, args, kwargs = request
        try:
            reply = {"ok": True, "value": to_wire(_resolve(probe)(module, *args, **kwargs))}
        except BaseException as e:  # noqa: BLE001
            reply = _describe(e)
        try:
            protocol.send_reply(rep_fd, reply)
        except Exception as e:  # the value is not something the grader accepts back
            protocol.send_reply(rep_fd, {"ok": False, "type": "ResultError",
                                         "error": f"the result could not be returned: {type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
