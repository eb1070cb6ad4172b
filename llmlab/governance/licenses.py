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


# the license a model inherits from share-alike data of each family (the Hub's license ids); CC BY-SA 3.0's
# adaptations may go out under a later version
SHARE_ALIKE_OUT = {"CC-BY-NC-SA": "cc-by-nc-sa-4.0", "CC-BY-SA": "cc-by-sa-4.0", "CDLA-Sharing-1.0": "cdla-sharing-1.0",
                   "GFDL": "gfdl"}


def share_alike_family(terms: Terms) -> str | None:
    """The share-alike license an adaptation must carry: the first one the string names (a dual license such
    as Wikipedia's "CC BY-SA 3.0 and GFDL" is satisfied by its first)."""
    return next((i for i in terms.ids if i in SHARE_ALIKE_OUT), None)


def combined(terms: list[Terms]) -> dict:
    """What a model trained on all of them inherits: the union of the obligations, whether two share-alike
    licenses of different families meet (each demands adaptations under itself: no one license satisfies
    both), and the outbound license: the one share-alike family's own, "other" on a conflict or with
    non-commercial or unknown terms, else MIT (llmlab's code license; attribution still owed)."""
    nc = any(t.non_commercial for t in terms)
    families = sorted({f for t in terms if (f := share_alike_family(t))})
    unknown = any(t.unknown for t in terms)
    conflict = len(families) > 1
    license_id = ("other" if nc or unknown or conflict else SHARE_ALIKE_OUT[families[0]] if families else "mit")
    obligations = {o for t in terms for o in t.obligations}
    if conflict:
        obligations.add(f"conflicting share-alike terms ({' vs '.join(families)}): no single license satisfies both")
    return {"license": license_id, "attribution": any(t.attribution for t in terms), "share_alike": bool(families),
            "share_alike_families": families, "conflict": conflict, "non_commercial": nc, "unknown_terms": unknown,
            "obligations": sorted(obligations)}


def inherited(license_ids: list[str]) -> dict:
    """What a model trained on data under these licenses inherits, from SPDX ids: MIT, Apache-2.0,
    BSD-3-Clause, CC0-1.0, CC-BY-4.0, CC-BY-SA-3.0, CC-BY-SA-4.0, CC-BY-NC-4.0, CC-BY-NC-SA-4.0,
    CDLA-Sharing-1.0, GFDL-1.3 (any other id: custom terms). A dict of

    - ``attribution``: any license in that list but CC0-1.0;
    - ``share_alike``: any CC-BY-SA-*, CC-BY-NC-SA-*, CDLA-Sharing-* or GFDL-*;
    - ``non_commercial``: any CC-BY-NC-* (the NC-SA ones included);
    - ``unknown_terms``: any id outside the list;
    - ``conflict``: share-alike licenses of two or more of the families CC-BY-SA, CC-BY-NC-SA, CDLA-Sharing,
      GFDL (each demands that adaptations carry itself);
    - ``license``: the model's outbound license id: "other" with non-commercial or unknown terms or a
      conflict; else the one share-alike family's ("cc-by-sa-4.0", "cdla-sharing-1.0", "gfdl"); else "mit"."""
    c = combined([classify(x) for x in license_ids])
    return {k: c[k] for k in ("license", "attribution", "share_alike", "non_commercial", "unknown_terms", "conflict")}
