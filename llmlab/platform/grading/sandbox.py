"""The sandbox agent: imports a submission and answers the grader's calls, inside the OS sandbox.

Run by ``runner`` as a script (``python -I sandbox.py CONFIG``); the grader imports it only to grade
trusted code in its own process (``runner.InProcessBox``) the same way. It is
self-contained on purpose: inside the sandbox llmlab itself is not mounted (the submission cannot import
llmlab's reference implementations), so this file and ``protocol.py`` beside it are all of llmlab that
runs there; the probes a check needs arrive by value (cloudpickle) with each request.

The wall is the operating system (``isolation.py``: namespaces, read-only system, rlimits). What this
agent adds on top is for clear messages, not security:
- the lab's off-limits library calls are replaced by functions that raise ``OffLimits``;
- ``llmlab`` imports fail with a message that says why;
- without OS isolation (a laptop without user namespaces, ``llmlab grade`` of one's own code only) an
  audit hook refuses the obvious escapes, so that careless code still fails early.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import os
import pickle
import resource
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402  (this folder; not a package inside the sandbox)

sys.path.pop(0)

OUTPUT_LIMIT_BYTES = 8 * 2**20  # files the submission writes (RLIMIT_FSIZE)


class OffLimits(RuntimeError):
    """A library call the lab asks the learner to write themselves."""


class SandboxViolation(PermissionError):
    pass


_LIBRARY_PREFIXES = tuple({os.path.join(q, "") for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}
                           for q in (p, os.path.realpath(p))})


def _called_by_library(frame) -> bool:
    """Library code (torch's nn.Linear calling F.linear) may use an off-limits callable; the submission may
    not. Our probes arrive by value (cloudpickle names their code <dynamic-code>) from llmlab's modules."""
    filename = frame.f_code.co_filename
    return filename.startswith(_LIBRARY_PREFIXES) or (
        filename == "<dynamic-code>" and str(frame.f_globals.get("__name__", "")).startswith("llmlab."))


def _off_limits(name: str, lab: str, original):
    message = f"{name} is off limits in lab {lab}: write it yourself (see `llmlab lab show {lab}`)"
    if isinstance(original, type):  # a class: still a class (isinstance and subclassing keep working)
        def __init__(self, *args, **kwargs):
            if not _called_by_library(sys._getframe(1)):
                raise OffLimits(message)
            original.__init__(self, *args, **kwargs)

        return type(original.__name__, (original,), {"__init__": __init__, "__module__": original.__module__})

    def refuse(*args, **kwargs):
        if not _called_by_library(sys._getframe(1)):
            raise OffLimits(message)
        return original(*args, **kwargs)

    refuse.__name__ = getattr(original, "__name__", name.rpartition(".")[2])
    return refuse


class _Guard(importlib.abc.MetaPathFinder):
    """Refuses imports of whole packages (llmlab itself; a lab's off-limits libraries) and replaces
    off-limits callables in modules imported later, as they are imported."""

    def __init__(self, refused: dict[str, str], pending: dict[str, list[str]], lab: str):
        self.refused, self.pending, self.lab = refused, pending, lab  # package -> why; module -> attrs

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.refused:
            raise ImportError(f"importing {fullname} is not allowed in the grader's sandbox: "
                              f"{self.refused[fullname.partition('.')[0]]}")
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                run, attrs = spec.loader.exec_module, self.pending.pop(fullname)

                def exec_module(module, run=run, attrs=attrs):
                    run(module)
                    _replace(module, fullname, attrs, self.lab)

                spec.loader.exec_module = exec_module
                return spec
        return None


def _replace(module, module_name: str, attrs: list[str], lab: str) -> None:
    for attr in attrs:
        *owners, last = attr.split(".")
        obj = module
        for name in owners:
            obj = getattr(obj, name)
        setattr(obj, last, _off_limits(f"{module_name}.{attr}", lab, getattr(obj, last)))


def _forbid(entries: list[str], lab: str, block_llmlab: bool) -> None:
    """Make each off-limits entry fail: ``pkg`` refuses to import; ``module:attr`` (or
    ``module:Class.attr``) becomes a function that raises OffLimits, now if the module is loaded, else
    when it is."""
    refused, pending = {}, {}
    for entry in entries:
        if ":" not in entry:
            refused[entry] = f"{entry} is off limits in lab {lab}"
        else:
            module, _, attr = entry.partition(":")
            pending.setdefault(module, []).append(attr)
    for module in [m for m in pending if m in sys.modules]:
        _replace(sys.modules[module], module, pending.pop(module), lab)
    if block_llmlab:
        refused["llmlab"] = ("llmlab's own implementations are not available to submissions; write the lab's "
                             "functions yourself")
    sys.meta_path.insert(0, _Guard(refused, pending, lab))


# --- the fallback policy, only when the OS gives no isolation --------------------------------------------
_DENIED_EVENTS = {
    "subprocess.Popen": "starting processes", "os.system": "starting processes", "os.exec": "starting processes",
    "os.posix_spawn": "starting processes", "os.spawn": "starting processes", "os.fork": "starting processes",
    "os.forkpty": "starting processes", "pty.spawn": "starting processes", "os.kill": "sending signals",
    "os.killpg": "sending signals", "signal.pthread_kill": "sending signals", "socket.connect": "network access",
    "socket.bind": "network access", "socket.sendto": "network access", "socket.sendmsg": "network access",
    "socket.getaddrinfo": "network access", "ctypes.dlopen": "loading native code",
    "ctypes.dlsym": "loading native code", "ctypes.call_function": "loading native code",
    "resource.setrlimit": "changing resource limits", "resource.prlimit": "changing resource limits",
    "sys.addaudithook": "installing audit hooks", "sqlite3.connect": "opening databases",
}


def _install_audit_hook(write_root: str) -> None:
    """Friendly early errors for careless code when no OS sandbox exists. Not a wall: a determined
    submission can get around anything that lives in its own process."""

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            mode, flags = args[1], args[2]
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                flags is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
            if writing:
                real = os.path.realpath(os.fsdecode(args[0]))
                if not (real == write_root or real.startswith(write_root + os.sep)):
                    raise SandboxViolation(f"sandbox: writing {args[0]!r} is outside the sandbox dir")
        elif event in _DENIED_EVENTS:
            raise SandboxViolation(f"sandbox: {_DENIED_EVENTS[event]} is not allowed ({event})")

    sys.addaudithook(hook)


# --- values ---------------------------------------------------------------------------------------------
def to_wire(value):
    """A submission's value as the grader accepts it back: tensors, numbers, str, lists, dicts."""
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [to_wire(v) for v in value.tolist()]
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.detach().clone().contiguous()  # a real copy: no expanded views, no shared storage
    if isinstance(value, tuple | list):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    return value


def call_by_name(submission, name: str, *args, **kwargs):
    fn = getattr(submission, name, None)
    if fn is None:
        raise AttributeError(f"the submission does not define {name!r}")
    return fn(*args, **kwargs)


def _load_submission(path: str):
    if os.path.isdir(path):
        sys.path.insert(0, path)
        for name in ("submission.py", "__init__.py"):
            if os.path.exists(os.path.join(path, name)):
                file = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError("the submission folder has neither submission.py nor __init__.py")
    else:
        sys.path.insert(0, os.path.dirname(path))
        file = path
    spec = importlib.util.spec_from_file_location("submission", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules["submission"] = module
    spec.loader.exec_module(module)
    return module


def describe(exc: BaseException) -> dict:
    if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG from RLIMIT_FSIZE
        message = f"wrote a file over {OUTPUT_LIMIT_BYTES // 2**20} MB (output limit)"
    elif isinstance(exc, SystemExit):
        message = f"the submission called sys.exit({exc.code!r})"
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    # the innermost frame that belongs to the submission, for the learner
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(here) and "site-packages" not in f.filename]
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return {"ok": False, "error": message[:2000] + where, "type": type(exc).__name__}


def main() -> None:
    cfg = json.loads(sys.argv[1])
    req_fd, rep_fd = cfg["req_fd"], cfg["rep_fd"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long file fails with EFBIG, not death
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    import torch  # what the probes need, before memory is capped

    torch.set_num_threads(1)
    for name in cfg["preload"]:
        importlib.import_module(name)
    _forbid(cfg["forbidden"], cfg["lab"], block_llmlab=not cfg["trusted"])

    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    cap = vm + cfg["memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    os.chdir(cfg["scratch"])
    if cfg["isolated"]:  # counted per uid: only the sandbox's own uid's processes
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["max_processes"], cfg["max_processes"]))
    else:
        _install_audit_hook(os.path.realpath(cfg["scratch"]))

    try:
        module = _load_submission(cfg["submission"])
        protocol.send_reply(rep_fd, {"ok": True, "names": sorted(n for n in vars(module) if not n.startswith("_"))})
    except BaseException as e:  # noqa: BLE001 - a broken submission is reported, not raised
        protocol.send_reply(rep_fd, describe(e) | {"stage": "import"})
        return

    while True:
        try:
            probe, args, kwargs = pickle.loads(protocol.read_request(req_fd))
        except protocol.ChannelClosed:
            return
        try:
            value = probe(module, *args, **kwargs) if callable(probe) else call_by_name(module, probe, *args,
                                                                                          **kwargs)
            reply = {"ok": True, "value": to_wire(value)}
        except BaseException as e:  # noqa: BLE001
            reply = describe(e)
        try:
            protocol.send_reply(rep_fd, reply)
        except Exception as e:  # the value is not something the grader accepts back
            protocol.send_reply(rep_fd, {"ok": False, "type": "ResultError",
                                         "error": f"the result could not be returned: {type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
