"""An integrity report for instructors: how much of a submission's code is llmlab's reference, or another
learner's submission, after renaming and reformatting. It never changes a score.

The method is MOSS's (Schleimer, Wilkerson and Aiken, "Winnowing: local algorithms for document
fingerprinting", SIGMOD 2003): the source becomes a stream of normalised tokens (every identifier ``V``,
every number ``N``, every string ``S``; keywords, operators and indentation kept; comments and docstrings
dropped), hashed k-grams of that stream are winnowed (the smallest hash of every window of ``w`` k-grams),
and two files are compared by the share of one's fingerprints found in the other. Renaming variables,
reformatting, adding comments or reordering functions changes nothing; k-grams shorter than ``k`` tokens
(boilerplate like ``return x``) cannot match on their own, and code every learner was given (the
starter's signatures) is left out, as MOSS's base file is.
"""

from __future__ import annotations

import hashlib
import io
import keyword
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

K, WINDOW = 12, 8  # tokens per k-gram; k-grams per winnowing window (MOSS-like defaults for code)
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER, tokenize.TYPE_COMMENT}


def tokens(source: str) -> list[str]:
    """The normalised token stream of Python source (best effort on code that does not tokenize)."""
    out: list[str] = []
    previous, in_docstring = None, False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIP:
                continue
            if tok.type == tokenize.STRING and previous in (None, tokenize.NEWLINE, tokenize.INDENT,
                                                            tokenize.DEDENT):
                previous, in_docstring = tok.type, True  # a docstring (a string statement): not code
                continue
            if in_docstring and tok.type == tokenize.NEWLINE:  # the docstring statement's end
                in_docstring, previous = False, tok.type
                continue
            in_docstring = False
            if tok.type == tokenize.NAME:
                out.append(tok.string if keyword.iskeyword(tok.string) else "V")
            elif tok.type == tokenize.NUMBER:
                out.append("N")
            elif tok.type == tokenize.STRING:
                out.append("S")
            elif tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE):
                out.append(tokenize.tok_name[tok.type])
            else:
                out.append(tok.string)
            previous = tok.type
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def fingerprints(source: str, k: int = K, window: int = WINDOW) -> set[int]:
    """Winnowed hashes of the k-grams of ``tokens(source)``."""
    stream = tokens(source)
    hashes = [int.from_bytes(hashlib.blake2b(" ".join(stream[i:i + k]).encode(), digest_size=8).digest(), "big")
              for i in range(len(stream) - k + 1)]
    if len(hashes) <= window:
        return set(hashes)
    return {min(hashes[i:i + window]) for i in range(len(hashes) - window + 1)}


def containment(a: set[int], b: set[int]) -> float:
    """The share of a's fingerprints found in b (0 when a has none)."""
    return len(a & b) / len(a) if a else 0.0


def source_of(path: Path) -> str:
    """All Python source of a submission (a file, or a folder's .py files in name order)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    return "\n".join(f.read_text(errors="replace") for f in files if f.is_file())


@dataclass
class Match:
    submission_id: str
    learner: str
    similarity: float


@dataclass
class IntegrityReport:
    reference: float  # share of the submission's fingerprints found in llmlab's reference for the lab
    peers: list[Match] = field(default_factory=list)  # the most similar other learners' submissions
    fingerprints: int = 0

    def as_dict(self) -> dict:
        return {"reference": round(self.reference, 3), "fingerprints": self.fingerprints,
                "peers": [{"submission_id": m.submission_id, "learner": m.learner, "similarity": round(m.similarity, 3)}
                          for m in self.peers],
                "method": f"winnowed {K}-gram fingerprints of normalised tokens (MOSS); never changes the score"}


def report(source: str, reference_source: str, others: list[tuple[str, str, str]], base: str = "",
           top: int = 5) -> IntegrityReport:
    """``others``: (submission id, learner, source) of other learners' submissions to the same lab. ``base``
    is code every learner was given (the starter: signatures and docstrings), left out of the comparison as
    MOSS's base file is."""
    given = fingerprints(base)
    mine = fingerprints(source) - given
    peers = sorted((Match(sid, who, containment(mine, fingerprints(text))) for sid, who, text in others),
                   key=lambda m: -m.similarity)[:top]
    return IntegrityReport(containment(mine, fingerprints(reference_source)), peers, len(mine))
