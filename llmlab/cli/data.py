"""The course's data sets: list them, verify the files, fetch what is missing."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from llmlab.cli import Fail, app, out

data_app = typer.Typer(help="The course's public data sets: list, verify, fetch.", no_args_is_help=True)
app.add_typer(data_app, name="data")
SetsArg = Annotated[list[str] | None, typer.Argument(metavar="[SET]...", help="data sets (default: see --help)")]


def _names(sets: list[str] | None, lab: list[str] | None, every: bool) -> list[str]:
    from llmlab.data import catalog
    from llmlab.labs import built_labs

    try:
        if every:
            return list(catalog.datasets())
        if sets:
            return [catalog.get(s).name for s in sets]
        return [d.name for d in catalog.for_labs(lab or built_labs())]
    except catalog.FetchError as e:
        raise Fail(str(e), 2) from None


LabOpt = Annotated[list[str] | None, typer.Option("--lab", help="the sets these labs use (repeatable)")]
AllOpt = Annotated[bool, typer.Option("--all", help="every data set of the course")]


@data_app.command("list")
def data_list(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Every data set: files, size, license, the labs that use it, and whether it is here (sizes only)."""
    from llmlab.data import catalog

    rows = []
    for d in catalog.datasets().values():
        states = [catalog.check(f, full=False)[0] for f in d.files]
        rows.append({"name": d.name, "title": d.title, "files": len(d.files), "bytes": d.size, "license": d.license,
                     "used_by": list(d.used_by), "present": sum(s == "ok" for s in states),
                     "mirror_only": sum(f.url is None for f in d.files)})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("set", "files", "size", "here", "used by", "license", title="data sets (datasets.toml)")
    for r in rows:
        here = "[green]yes[/]" if r["present"] == r["files"] else f"[yellow]{r['present']}/{r['files']}[/]"
        table.add_row(r["name"], str(r["files"]), f"{r['bytes'] / 1e6:.1f} MB", here, ", ".join(r["used_by"]),
                      r["license"])
    out.print(table)
    out.print(f"looked up in: {', '.join(map(str, catalog.roots()))}; `llmlab data fetch` writes to "
              f"{catalog.target_dir()}")


@data_app.command("verify")
def data_verify(sets: SetsArg = None, lab: LabOpt = None, every: AllOpt = False):
    """Check size and SHA-256 of every file of the sets (default: those the built labs use); exit 1 if any
    is missing or damaged."""
    from llmlab.data import catalog

    bad = 0
    for name in _names(sets, lab, every):
        for f in catalog.get(name).files:
            state, where = catalog.check(f)
            if state != "ok":
                bad += 1
                out.print(f"[red]{state}[/] {f.path}" + (f" ({where})" if where else ""))
    if bad:
        raise Fail(f"{bad} file(s) missing or damaged; `llmlab data fetch` downloads them")
    out.print("[green]all files verified[/] (size and SHA-256)")


@data_app.command("fetch")
def data_fetch(sets: SetsArg = None, lab: LabOpt = None, every: AllOpt = False,
               mirror: Annotated[str | None, typer.Option(help="base URL laid out like the data folder",
                                                          envvar="LLMLAB_DATA_MIRROR")] = None,
               hub_repo: Annotated[str | None, typer.Option(
                   help="a Hugging Face dataset repository mirroring the data folder",
                   envvar="LLMLAB_DATA_HUB_REPO")] = None,
               revision: Annotated[str, typer.Option(help="the Hub repository's revision")] = "main"):
    """Download the files of the sets (default: those the built labs use) that are missing or damaged,
    verify their checksums, and keep partial downloads to resume."""
    from llmlab.data import catalog

    try:
        fetched = catalog.fetch(_names(sets, lab, every), mirror=mirror, hub_repo=hub_repo, revision=revision)
    except catalog.FetchError as e:
        raise Fail(str(e)) from None
    out.print(f"fetched {len(fetched)} file(s) into {catalog.target_dir()}" if fetched else "nothing to fetch")
