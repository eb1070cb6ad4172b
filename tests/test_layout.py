"""The layout a newcomer reads (README "Layout"), held as tests: imports go one way (platform and cli ->
labs -> concepts), no module-level import cycles, and no module over 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PKG = Path(__file__).resolve().parents[1] / "llmlab"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 more
                pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "llmlab" or m.startswith("llmlab.")}


def _kind(module: str) -> str:
    part = module.split(".")[1] if "." in module else ""
    return part if part in ("platform", "labs", "cli") else "concept"


def test_imports_go_one_way():
    """Concept modules import neither labs, platform nor cli; labs never import platform or cli (function-level
    imports included)."""
    allowed = {"concept": {"concept"}, "labs": {"concept", "labs"}, "platform": {"concept", "labs", "platform"},
               "cli": {"concept", "labs", "platform", "cli"}}
    bad = []
    for module, path in _modules().items():
        if module == "llmlab":
            continue  # the package's own __init__ (version, the moved-module aliases)
        for imported in _imports(path, module, top_level_only=False):
            if imported != "llmlab" and _kind(imported) not in allowed[_kind(module)]:
                bad.append(f"{module} -> {imported}")
    assert bad == []


def test_no_import_cycles():
    modules = _modules()
    graph = nx.DiGraph()
    for module, path in modules.items():
        for imported in _imports(path, module, top_level_only=True):
            target = next((m for m in (imported, imported.rsplit(".", 1)[0]) if m in modules), None)
            if target and target != module and not module.startswith(target + "."):
                graph.add_edge(module, target)
    assert list(nx.simple_cycles(graph)) == []


def test_no_module_over_450_lines():
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    assert {m: n for m, n in sizes.items() if n >= 450} == {}
