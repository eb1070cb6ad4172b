"""A static scan of a submission's source: off-limits library calls and ways around them.

Reported on the result (``GradeResult.findings``) for the learner and the instructor; never scored. The
sandbox is what makes off-limits calls fail; the scan says where a submission tried, including routes the
sandbox's replacement of a function cannot see (``torch._C``, ``getattr`` with a computed name, ``exec``).
Names are resolved through the submission's imports (``import torch.nn.functional as F``,
``from torch.linalg import svd as s``); a forbidden ``torch.Tensor.<method>`` is reported at every
``.method`` attribute, since a method's receiver has no static type.
"""

from __future__ import annotations

import ast
from pathlib import Path

MAX_FILES = 200
MAX_FINDINGS = 50
_INDIRECTION = {
    "__import__": "imports a module by a computed name", "importlib": "imports modules by computed names",
    "exec": "runs code built at run time", "eval": "runs code built at run time",
    "compile": "compiles code at run time", "ctypes": "calls native code", "gc": "walks the interpreter's objects",
    "sys.modules": "reaches modules through sys.modules", "torch._C": "calls torch's C bindings directly",
    "torch.ops": "calls torch's operator registry directly", "builtins": "reaches the builtins module",
    "torch._VF": "calls torch's C bindings directly", "llmlab": "imports llmlab (not available to submissions)",
}


def _files(submission: Path) -> list[Path]:
    if submission.is_file():
        return [submission]
    return sorted(p for p in submission.rglob("*.py") if p.is_file())[:MAX_FILES]


class _Scanner(ast.NodeVisitor):
    def __init__(self, forbidden: tuple[str, ...], file: str):
        self.forbidden, self.file = tuple(f.replace(":", ".") for f in forbidden), file
        self.methods = {f.rpartition(".")[2]: f for f in self.forbidden if f.startswith("torch.Tensor.")}
        self.aliases: dict[str, str] = {}
        self.found: list[str] = []

    def _report(self, node: ast.AST, message: str) -> None:
        self.found.append(f"{self.file}:{getattr(node, 'lineno', 0)}: {message}")

    def _judge(self, node: ast.AST, dotted: str) -> None:
        for f in self.forbidden:
            if dotted == f or dotted.startswith(f + "."):
                self._report(node, f"uses {f}, which is off limits in this lab")
                return
        for name, why in _INDIRECTION.items():
            if dotted == name or dotted.startswith(name + "."):
                self._report(node, f"{dotted}: {why}")
                return

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name.partition(".")[0]] = a.name if a.asname else a.name.partition(".")[0]
            self._judge(node, a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: the submission's own modules
            return
        for a in node.names:
            full = f"{node.module}.{a.name}"
            self.aliases[a.asname or a.name] = full
            self._judge(node, full)

    def _dotted(self, node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        root = self.aliases.get(node.id, node.id)
        return ".".join([root, *reversed(parts)])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self._dotted(node)
        if dotted is not None and "." in dotted:
            self._judge(node, dotted)
        elif node.attr in self.methods:
            self._report(node, f".{node.attr}: {self.methods[node.attr]} is off limits in this lab")
        if dotted is None:
            self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in ("__import__", "exec", "eval", "compile") or node.id in self.aliases:
            self._judge(node, self.aliases.get(node.id, node.id))

    def visit_Call(self, node: ast.Call) -> None:
        if (isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2
                and not isinstance(node.args[1], ast.Constant)):
            self._report(node, "getattr with a computed name (hides which attribute is used)")
        self.generic_visit(node)


def scan(submission: Path, forbidden: tuple[str, ...] = ()) -> list[str]:
    """Findings as ``file:line: message``, in file and line order, at most MAX_FINDINGS."""
    submission = Path(submission)
    base = submission.parent if submission.is_file() else submission
    found: list[str] = []
    for path in _files(submission):
        try:
            tree = ast.parse(path.read_bytes(), filename=path.name)
        except (SyntaxError, ValueError, OSError):
            continue  # the grader reports a module that does not parse
        scanner = _Scanner(tuple(forbidden), str(path.relative_to(base)))
        scanner.visit(tree)
        found += list(dict.fromkeys(scanner.found))
    return found[:MAX_FINDINGS]
