"""What the licenses of a model's training data and parts oblige its publisher to do: attribution,
share-alike, non-commercial use only, or terms to read; from the license strings of the data manifest
(``llmlab.data.catalog``). A summary for a model card, not legal advice: whether weights are a derivative
work of their training data is unsettled, so share-alike obligations are reported as a risk, not a verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass

# (pattern, SPDX-like id, attribution, share-alike, non-commercial) in the order they are tried
RULES = (
    (r"CC BY-NC-SA|CC-BY-NC-SA", "CC-BY-NC-SA", True, True, True),
    (r"CC BY-NC|CC-BY-NC", "CC-BY-NC", True, False, True),
    (r"CC BY-SA|CC-BY-SA", "CC-BY-SA", True, True, False),
    (r"CDLA-Sharing", "CDLA-Sharing-1.0", True, True, False),
    (r"\bGFDL\b", "GFDL", True, True, False),
    (r"CC BY\b|CC-BY\b", "CC-BY", True, False, False),
    (r"Apache", "Apache-2.0", True, False, False),
    (r"\bMIT\b", "MIT", True, False, False),
    (r"BSD", "BSD", True, False, False),
    (r"public domain|CC0", "public-domain", False, False, False),
)


@dataclass(frozen=True)
class Terms:
    text: str
    ids: tuple[str, ...]
    attribution: bool
    share_alike: bool
    non_commercial: bool
    unknown: bool  # terms no rule recognises (a custom license, "cite the report", terms of use): read them

    @property
    def obligations(self) -> list[str]:
        out = []
        if self.attribution:
            out.append("credit the source")
        if self.share_alike:
            out.append("share adaptations under the same license (if the weights count as one)")
        if self.non_commercial:
            out.append("no commercial use")
        if self.unknown:
            out.append("custom terms: read them")
        return out


def classify(text: str) -> Terms:
    """Every license a manifest string names (a dataset's text and its repository's may differ), combined."""
    ids, att, sa, nc = [], False, False, False
    rest = text
    for pattern, spdx, a, s, n in RULES:
        if re.search(pattern, rest, re.I):
            ids.append(spdx)
            att, sa, nc = att or a, sa or s, nc or n
            rest = re.sub(pattern, "", rest, flags=re.I)
    unknown = not ids or bool(re.search(r"terms of use|cite|no license|see each", text, re.I))
    return Terms(text, tuple(ids), att, sa, nc, unknown)


def combined(terms: list[Terms]) -> dict:
    """What a model trained on all of them inherits: the union of the obligations, and its most restrictive
    outbound choice ("other" when non-commercial or unknown terms are involved)."""
    nc = any(t.non_commercial for t in terms)
    sa = any(t.share_alike for t in terms)
    unknown = any(t.unknown for t in terms)
    license_id = "other" if nc or unknown else "cc-by-sa-4.0" if sa else "mit"
    return {"license": license_id, "attribution": any(t.attribution for t in terms), "share_alike": sa,
            "non_commercial": nc, "unknown_terms": unknown,
            "obligations": sorted({o for t in terms for o in t.obligations})}
