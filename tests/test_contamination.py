"""The 13-gram contamination check (GPT-3's method) on small corpora whose overlaps are known."""

from __future__ import annotations

from llmlab.evals.contamination import NgramIndex, ngrams, report, words

LONG = "The mitochondria is the powerhouse of the cell and it makes most of the energy a cell uses"


def test_overlap_is_found_through_case_and_punctuation():
    index = NgramIndex(["Unrelated words here. " + LONG.upper().replace(" and", ", and") + "!", "other text"])
    assert words("It's a B-52!") == ["it", "s", "a", "b", "52"] and len(ngrams(words(LONG), 13)) == 6
    assert index.overlap(LONG) == 1.0 and index.dirty("Question: " + LONG + "?")
    half = " ".join(LONG.split()[:14]) + " but nothing else in this sentence was ever written down anywhere"
    assert 0 < index.overlap(half) < 1 and index.dirty(half)
    assert not index.dirty("the powerhouse of the cell is a phrase everyone has heard in school at some point in time")


def test_short_items_are_dirty_only_when_all_of_them_occur():
    index = NgramIndex(["a b c d e f", "x y z"], n=13)
    assert index.dirty("B c, D") and not index.dirty("c b") and not index.dirty("y z w") and not index.dirty("")


def test_report_splits_accuracy_by_clean_and_dirty():
    index = NgramIndex([LONG])
    r = report([LONG, "fresh item one", "fresh item two"], [True, False, True], index)
    assert (r["dirty"], r["acc_dirty"], r["acc_clean"], r["acc_all"]) == (1, 1.0, 0.5, 2 / 3)
