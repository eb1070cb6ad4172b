"""Tokenizer and graph tools (labs m06 and m10)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from llmlab.cli import Fail, app, out

tokenizer_app = typer.Typer(help="Train and inspect tokenizers (lab m10).", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(inputs: Annotated[list[Path], typer.Argument(metavar="INPUT...", help="UTF-8 text files")],
                    out_dir: Annotated[Path, typer.Option("--out", help="folder for tokenizer.json and friends")],
                    model: Annotated[str, typer.Option("--model", help="bpe or unigram")] = "bpe",
                    vocab_size: Annotated[int, typer.Option("--vocab-size")] = 10_000,
                    special_tokens: Annotated[list[str] | None, typer.Option("--special-tokens",
                                                                            help="repeat for several")] = None,
                    as_json: Annotated[bool, typer.Option("--json")] = False):
    """Train a byte-level BPE or unigram tokenizer on text files; writes tokenizer.json (Hugging Face),
    plus vocab.json and merges.txt for BPE."""
    import time

    from llmlab import tokenization as tk

    if model not in ("bpe", "unigram"):
        raise Fail("--model must be bpe or unigram", 2)
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise Fail(f"no such file: {', '.join(missing)}", 2)
    try:
        text = "".join(p.read_text(encoding="utf-8") for p in inputs)
    except UnicodeDecodeError as e:
        raise Fail(f"input is not UTF-8 text: {e}", 2) from None
    specials = special_tokens or []
    t0 = time.perf_counter()
    try:
        cls = tk.BPETokenizer if model == "bpe" else tk.UnigramTokenizer
        tok = cls.train(text, vocab_size, specials, progress=not as_json)
    except ValueError as e:
        raise Fail(str(e), 2) from None
    seconds = time.perf_counter() - t0
    tok.save(out_dir)
    summary = {"model": model, "vocab_size": tok.vocab_size, "special_tokens": specials,
               "input_bytes": len(text.encode("utf-8")), "bytes_per_token": round(tk.compression_ratio(tok, text), 4),
               "seconds": round(seconds, 2), "out": str(out_dir)}
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table("", "", title=f"{model} tokenizer")
    for k, v in summary.items():
        table.add_row(k, str(v))
    out.print(table)


@app.command("suffix-tree")
def suffix_tree_cmd(text: Annotated[str, typer.Argument(help="the text (or --file)")] = "",
                    out_path: Annotated[Path, typer.Option("--out", help=".svg/.png/.pdf/.dot")] = Path("tree.svg"),
                    file: Annotated[Path | None, typer.Option("--file", help="read the text from a file")] = None,
                    max_nodes: Annotated[int, typer.Option("--max-nodes")] = 400):
    """Build a suffix tree (Ukkonen) and draw it with Graphviz; prints its statistics."""
    from llmlab import suffix

    if file is not None:
        if not file.is_file():
            raise Fail(f"no such file: {file}", 2)
        text = file.read_text(encoding="utf-8")
    if not text:
        raise Fail("give a text or --file", 2)
    tree = suffix.SuffixTree(text)
    try:
        suffix.render_dot(tree.to_dot(max_nodes), out_path)
    except (suffix.GraphvizMissing, ValueError) as e:
        raise Fail(str(e), 2) from None
    lrs = tree.longest_repeated_substring()
    out.print(f"{len(text)} characters, {tree.n_nodes} nodes, {tree.distinct_substrings()} distinct substrings, "
              f"longest repeated substring ({len(lrs)} chars): {lrs[:60]!r}\nwrote {out_path}")


@app.command("vocab-trie")
def vocab_trie_cmd(path: Annotated[Path, typer.Argument(help="tokenizer folder, tokenizer.json or vocab.json")],
                   out_path: Annotated[Path, typer.Option("--out", help=".svg, .png, .pdf or .dot")] = Path("trie.svg"),
                   max_nodes: Annotated[int, typer.Option("--max-nodes")] = 200):
    """Draw a prefix trie of a tokenizer's vocabulary (shortest tokens first, up to --max-nodes)."""
    from llmlab import suffix, tokenization

    if not path.exists():
        raise Fail(f"no such tokenizer: {path}", 2)
    try:
        tokens = tokenization.vocabulary_strings(path)
    except (OSError, ValueError, KeyError) as e:
        raise Fail(f"cannot read a vocabulary from {path}: {e}", 2) from None
    try:
        suffix.render_dot(suffix.vocab_trie_dot(sorted(tokens, key=len), max_nodes), out_path)
    except (suffix.GraphvizMissing, ValueError) as e:
        raise Fail(str(e), 2) from None
    out.print(f"{len(tokens)} tokens; wrote {out_path}")


