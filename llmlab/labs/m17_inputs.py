"""Hidden inputs for lab m17's checks, drawn in the grader from each check's seeded generator: documents
made to sit on both sides of each Gopher rule's threshold, and text with PII and decoys."""

from __future__ import annotations

from llmlab.labs.base import CheckContext

STOP = ["the", "be", "to", "of", "and", "that", "have", "with"]
NOUNS = ["river", "garden", "teacher", "window", "market", "engine", "letter", "harbour", "village", "doctor",
         "storm", "bridge", "kitchen", "library", "soldier", "mountain", "painter", "station", "winter", "island"]
VERBS = ["finds", "carries", "opens", "watches", "builds", "follows", "paints", "repairs", "visits", "answers"]


def sentence(ctx: CheckContext) -> str:
    w = [ctx.choice(["The", "A", "Every", "That"]), ctx.choice(NOUNS), ctx.choice(VERBS), ctx.choice(STOP[:4]),
         ctx.choice(NOUNS)]
    w += [ctx.choice(STOP + NOUNS + VERBS) for _ in range(ctx.randint(2, 9))]
    return " ".join(w) + ctx.choice([".", ".", "!", "?"])


def prose(ctx: CheckContext, sentences: int) -> str:
    lines, n = [], 0
    while n < sentences:
        k = min(sentences - n, ctx.randint(1, 4))
        lines.append(" ".join(sentence(ctx) for _ in range(k)))
        n += k
    return ("\n\n" if ctx.rng.random() < 0.3 else "\n").join(lines)


def document(ctx: CheckContext, kind: str, strong: bool = False) -> str:
    """A document made to sit near one rule's threshold (on either side); ``strong``: one that trips the
    rule for sure (and no earlier one)."""
    base = prose(ctx, ctx.randint(12, 16) if strong else ctx.randint(2, 12))
    lines = base.split("\n")
    if kind == "short":  # strong: under 50 content words, over 50 with the punctuation
        return " ".join(base.split()[:ctx.randint(40, 47) if strong else ctx.randint(30, 70)]) + " ," * 12 * strong
    if kind == "long_words":
        return " ".join(w * ctx.randint(1, 3) for w in base.split())
    if kind == "hashes":
        return base + " " + " ".join("#" + ctx.choice(NOUNS) for _ in range(ctx.randint(0, 30)))
    if kind == "ellipsis":
        return "\n".join(line + ("..." if ctx.rng.random() < 0.4 else "") for line in lines)
    if kind == "bullets":
        return "\n".join(ctx.choice(["- ", "• ", "  - ", ""]) + line for line in lines)
    if kind == "numbers":
        return base + " " + " ".join(str(ctx.randint(100, 99999)) for _ in range(ctx.randint(0, 60)))
    if kind == "no_stop":
        keep = 0.0 if strong else ctx.rng.uniform(0, 0.05)
        return " ".join(w for w in prose(ctx, ctx.randint(10, 16)).split() if w.lower().strip(".!?") not in STOP
                        or ctx.rng.random() < keep)
    if kind == "dup_lines" and strong:  # one paragraph, every line twice: duplicate_lines for sure
        lines = [line for line in lines if line]
        return "\n".join(lines + lines)
    if kind == "dup_lines":
        return "\n".join(lines + [ctx.choice(lines) for _ in range(ctx.randint(0, len(lines)))])
    if kind == "dup_paragraphs":  # strong: every paragraph twice, duplicate_paragraphs for sure
        paras = [para for para in lines if para]
        return "\n\n".join(paras + (paras if strong else [ctx.choice(paras) for _ in range(ctx.randint(0, 3))]))
    if kind == "ngrams" and strong:  # 3 copies of 6 distinct words: few repeated n-gram characters when a
        # repeat jumps ahead by n, about 4 times as many when overlapping windows count
        phrase = " ".join(ctx.rng.choice(NOUNS, 6, replace=False))
        return prose(ctx, ctx.randint(14, 19)) + " " + " ".join([phrase] * 3)
    if kind == "ngrams":  # a phrase repeated back to back: overlapping windows over it repeat too
        phrase = " ".join(ctx.choice(NOUNS + VERBS) for _ in range(ctx.randint(5, 9)))
        return prose(ctx, ctx.randint(6, 12)) + " " + " ".join([phrase] * ctx.randint(1, 4))
    return base


KINDS = ("prose", "short", "long_words", "hashes", "ellipsis", "bullets", "numbers", "no_stop", "dup_lines",
         "dup_paragraphs", "ngrams")


def pii_text(ctx: CheckContext) -> str:
    user = lambda: "".join(ctx.choice("abcdexyz.") for _ in range(ctx.randint(1, 8))).strip(".") or "x"
    items = [f"{user()}@{ctx.choice(['example', 'mail.uni', 'b-c'])}.{ctx.choice(['org', 'com', 'co.uk'])}",
             f"({ctx.randint(200, 999)}) {ctx.randint(200, 999)}-{ctx.randint(1000, 9999)}",
             f"+1 {ctx.randint(200, 999)}.{ctx.randint(200, 999)}.{ctx.randint(1000, 9999)}",
             f"{ctx.randint(200, 999)}-{ctx.randint(200, 999)}-{ctx.randint(1000, 9999)}",
             f"+44 {ctx.randint(10, 99)} {ctx.randint(1000, 9999)} {ctx.randint(1000, 9999)}",
             ".".join(str(ctx.randint(0, 256)) for _ in range(4)),
             f"{ctx.randint(256, 999)}.{ctx.randint(0, 255)}.1.1", "1.2.3.4.5", f"version {ctx.randint(1, 9)}.10.2",
             f"in {ctx.randint(1900, 2030)}", "email me at", "@handle"]
    return " ".join(ctx.choice(["Call", "See", "or", "write to", "from", ""]) + " " + ctx.choice(items)
                    for _ in range(12))
