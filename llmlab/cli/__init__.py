"""The ``llmlab`` command. Thin: argument parsing and printing; the work is in the library.

One module per verb group: ``labs`` (labs, grading, submissions, the gradebook), ``platform`` (the course
run, services, learners, the local stack, SLOs and dashboards), ``text`` (tokenizer and graph tools),
``data`` (the course's data sets), ``scaling`` (``llmlab plan``) and ``train`` (``llmlab pretrain``). Every
verb exits non-zero on failure and prints the error without a traceback (``LLMLAB_DEBUG=1`` shows it).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="llmlab: the mathematics and engineering of LLMs, as 20 graded labs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)

AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray dashboard URL, e.g. http://HOST:8265 "
                                                "(default: a local head started on demand)")]
ServerOpt = Annotated[str | None, typer.Option(help="a grading service URL", envvar="LLMLAB_SERVER")]
TokenOpt = Annotated[str | None, typer.Option(help="your token for --server", envvar="LLMLAB_TOKEN")]


class Fail(Exception):
    """An error for the user: printed without a traceback, exit code ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def main() -> None:
    try:
        app(standalone_mode=False)
    except Fail as e:
        err.print(f"[red]error:[/] {e}")
        sys.exit(e.code)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except typer.Abort:
        sys.exit(130)
    except Exception as e:  # click usage errors and anything unexpected: one line, no traceback
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("LLMLAB_DEBUG"):
            raise
        err.print(f"[red]error:[/] {type(e).__name__}: {e}")
        sys.exit(1)


# the verb groups register their commands on ``app`` (imported last: they import the names above)
from llmlab.cli import data, evals, labs, platform, scaling, text, train  # noqa: E402,F401
