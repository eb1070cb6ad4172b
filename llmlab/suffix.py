"""Suffix trees built in linear time (Ukkonen 1995), their queries, and Graphviz views (lab m06).

The tree of ``text`` indexes ``text + terminal`` (a character not in the text), so every suffix ends at its
own leaf. Edges are (start, end) slices of the text, nodes are integers in flat lists, and every traversal
is iterative, so a tree of a few hundred thousand characters builds and queries without recursion limits.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_LEAF = -1  # end marker of leaf edges while building: they grow with the text ("once a leaf, always a leaf")


class SuffixTree:
    """Suffix tree of ``text``: substring queries, occurrence counts, the longest repeated substring and the
    number of distinct substrings, all from one O(n) construction."""

    def __init__(self, text: str, terminal: str | None = None):
        if terminal is None:
            terminal = next(c for c in ("$", "\0", *map(chr, range(0xE000, 0xF8FF))) if c not in text)
        if len(terminal) != 1 or terminal in text:
            raise ValueError("the terminal must be one character that does not occur in the text")
        self.text, self.terminal = text, terminal
        s = text + terminal
        self._s = s
        self.start: list[int] = [0]
        self.end: list[int] = [0]
        self.link: list[int] = [0]
        self.children: list[dict[str, int]] = [{}]
        node, edge, length, remainder = 0, 0, 0, 0  # the active point and the suffixes still to insert
        # steps: iterations of the inner loop (an insertion, a walk down or a phase's end), what Ukkonen's
        # amortised argument bounds by O(n): at most n + 1 insertions and ends, and walks paid for by `length`
        self.steps = 0
        for i, c in enumerate(s):
            remainder += 1
            last_internal = None
            while remainder:
                self.steps += 1
                if length == 0:
                    edge = i
                nxt = self.children[node].get(s[edge])
                if nxt is None:  # rule 2: a new leaf from an existing node
                    self.children[node][s[edge]] = self._new(i, _LEAF)
                    if last_internal is not None:
                        self.link[last_internal], last_internal = node, None
                else:
                    span = (i + 1 if self.end[nxt] == _LEAF else self.end[nxt]) - self.start[nxt]
                    if length >= span:  # walk down (skip/count)
                        edge, length, node = edge + span, length - span, nxt
                        continue
                    if s[self.start[nxt] + length] == c:  # rule 3: already there; this phase ends
                        if last_internal is not None and node != 0:
                            self.link[last_internal], last_internal = node, None
                        length += 1
                        break
                    split = self._new(self.start[nxt], self.start[nxt] + length)  # rule 2 with a split
                    self.children[node][s[edge]] = split
                    self.children[split][c] = self._new(i, _LEAF)
                    self.start[nxt] += length
                    self.children[split][s[self.start[nxt]]] = nxt
                    if last_internal is not None:
                        self.link[last_internal] = split
                    last_internal = split
                remainder -= 1
                if node == 0 and length > 0:
                    length -= 1
                    edge = i - remainder + 1
                elif node != 0:
                    node = self.link[node]
        self.end = [len(s) if e == _LEAF else e for e in self.end]
        self._leaves = self._count_leaves()

    def _new(self, start: int, end: int) -> int:
        self.start.append(start)
        self.end.append(end)
        self.link.append(0)
        self.children.append({})
        return len(self.start) - 1

    def _order(self) -> list[int]:
        """Nodes in depth-first preorder (iterative)."""
        order, stack = [], [0]
        while stack:
            n = stack.pop()
            order.append(n)
            stack.extend(self.children[n].values())
        return order

    def _count_leaves(self) -> list[int]:
        leaves = [0] * len(self.start)
        for n in reversed(self._order()):
            leaves[n] = 1 if not self.children[n] else sum(leaves[c] for c in self.children[n].values())
        return leaves

    @property
    def n_nodes(self) -> int:
        return len(self.start)

    def _locate(self, pattern: str) -> int | None:
        """The node at or below the end of ``pattern``'s path from the root, or None if it is no substring."""
        node, i = 0, 0
        while i < len(pattern):
            child = self.children[node].get(pattern[i])
            if child is None:
                return None
            label = self._s[self.start[child]: self.end[child]]
            take = min(len(label), len(pattern) - i)
            if pattern[i: i + take] != label[:take]:
                return None
            node, i = child, i + take
        return node

    def contains(self, pattern: str) -> bool:
        """Whether ``pattern`` is a substring of the text (the empty string always is)."""
        return self.terminal not in pattern and self._locate(pattern) is not None

    def count(self, pattern: str) -> int:
        """How many times ``pattern`` occurs in the text (overlaps included); len(text) + 1 for ''."""
        if self.terminal in pattern:
            return 0
        node = self._locate(pattern)
        return 0 if node is None else self._leaves[node]

    def longest_repeated_substring(self) -> str:
        """The longest substring occurring at least twice ('' if none): the deepest internal node. Among
        equally long ones, the lexicographically smallest."""
        best, stack = "", [(0, 0)]  # (node, string depth); labels are sliced only for candidates
        while stack:
            node, depth = stack.pop()
            if node != 0 and depth >= len(best):
                label = self._s[self.end[node] - depth: self.end[node]]
                if depth > len(best) or label < best:
                    best = label
            for child in self.children[node].values():
                if self.children[child]:
                    stack.append((child, depth + self.end[child] - self.start[child]))
        return best

    def distinct_substrings(self) -> int:
        """The number of distinct non-empty substrings of the text: the total edge length, less one per leaf
        for the substrings that end in the terminal."""
        total = sum(self.end[n] - self.start[n] for n in range(1, self.n_nodes))
        return total - sum(1 for n in range(1, self.n_nodes) if not self.children[n])

    def to_dot(self, max_nodes: int = 400) -> str:
        """Graphviz DOT of the tree: edge labels are the substrings, leaves show the suffix's start."""
        lines = ["digraph suffix_tree {", '  node [shape=circle, label="", width=0.15];', "  rankdir=LR;"]
        depth, shown = {0: 0}, 0
        for n in self._order():
            if shown >= max_nodes:
                lines.append(f'  more [shape=plaintext, label="... {self.n_nodes - shown} more nodes"];')
                break
            shown += 1
            for ch in sorted(self.children[n]):
                c = self.children[n][ch]
                label = self._s[self.start[c]: self.end[c]]
                depth[c] = depth[n] + len(label)
                if not self.children[c]:
                    lines.append(f'  n{c} [shape=box, width=0.2, label="{len(self._s) - depth[c]}"];')
                lines.append(f'  n{n} -> n{c} [label="{_escape(label)}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\\\n").replace("\0", "\\\\0")


# --- naive references (quadratic; for checking and teaching) ------------------------------------------
def suffix_array(text: str) -> list[int]:
    """Start positions of the suffixes in sorted order (O(n^2 log n) by plain sorting)."""
    return sorted(range(len(text)), key=lambda i: text[i:])


def lcp_array(text: str, sa: list[int]) -> list[int]:
    """Kasai et al.'s linear-time LCP of adjacent suffixes in the suffix array (lcp[0] = 0)."""
    rank = [0] * len(text)
    for r, i in enumerate(sa):
        rank[i] = r
    lcp, h = [0] * len(text), 0
    for i in range(len(text)):
        if rank[i] > 0:
            j = sa[rank[i] - 1]
            while i + h < len(text) and j + h < len(text) and text[i + h] == text[j + h]:
                h += 1
            lcp[rank[i]] = h
            h = max(h - 1, 0)
        else:
            h = 0
    return lcp


def distinct_substrings_naive(text: str) -> int:
    sa = suffix_array(text)
    return len(text) * (len(text) + 1) // 2 - sum(lcp_array(text, sa))


# --- Graphviz -----------------------------------------------------------------------------------------
class GraphvizMissing(RuntimeError):
    pass


def render_dot(dot: str, out: Path) -> Path:
    """Write ``dot`` to ``out``: .dot as is, .svg/.png/.pdf rendered by Graphviz's ``dot``."""
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv"):
        out.write_text(dot)
        return out
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"write .dot, .svg, .png or .pdf, not .{fmt}")
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing("Graphviz's `dot` is not installed (Debian: apt-get install graphviz; "
                              "or write a .dot file)")
    r = subprocess.run([exe, f"-T{fmt}", "-o", str(out)], input=dot.encode(), capture_output=True, timeout=120)
    if r.returncode:
        raise RuntimeError(f"dot failed: {r.stderr.decode()[-500:]}")
    return out


def vocab_trie_dot(tokens: list[str], max_nodes: int = 300) -> str:
    """A prefix trie of a tokenizer's vocabulary as DOT: nodes are prefixes, double circles are tokens."""
    trie: dict[str, set[str]] = {"": set()}
    vocab = set(tokens)
    for tok in sorted(tokens, key=lambda t: (len(t), t)):
        for k in range(1, len(tok) + 1):
            if len(trie) >= max_nodes and tok[:k] not in trie:
                break
            trie.setdefault(tok[:k], set())
            trie[tok[: k - 1]].add(tok[:k])
    ids = {p: i for i, p in enumerate(sorted(trie, key=lambda p: (len(p), p)))}
    lines = ["digraph vocab_trie {", "  rankdir=LR;", '  n0 [label="", shape=point];']
    for p, i in ids.items():
        if p:
            shape = "doublecircle" if p in vocab else "circle"
            lines.append(f'  n{i} [label="{_escape(p[-1])}", shape={shape}, tooltip="{_escape(p)}"];')
        for child in sorted(trie[p]):
            lines.append(f"  n{i} -> n{ids[child]};")
    lines.append("}")
    return "\n".join(lines) + "\n"
