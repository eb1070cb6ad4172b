"""Lab m17's document stages on the real Common Crawl samples: HTML extraction (resiliparse and
trafilatura), language identification (py3langid), the Gopher and C4 rules against datatrove's
implementations of the same rules, the toxicity classifier against an autograd gradient and SciPy's
Mann-Whitney statistic, and the uint16 token shards and their per-rank loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab.data import resolve
from llmlab.pipeline import dedup, extract, quality, shards, stages, toxicity, warc

CC = "commoncrawl/"


def _html_pages():
    return [(r.url, extract.decode_http(r.body)[2])
            for r in warc.records(resolve(CC + "CC-MAIN-2020-34-sample.warc.gz"), types=("response",))]


def _corpus() -> list[str]:
    """Every text of the samples: the WET conversion records and the extracted HTML pages."""
    wet = [r.text for f in ("CC-MAIN-2016-50-wet-00009-filtered25.warc.wet.gz",
                            "CC-MAIN-2016-50-wet-00009-head51200.warc.wet.gz")
           for r in warc.records(resolve(CC + f), types=("conversion",))]
    return wet + [extract.html_to_text(html) for _, html in _html_pages()]


def test_http_decoding_and_both_extractors_on_real_pages():
    pages = _html_pages()
    assert len(pages) == 16
    spb = dict(pages)["http://01spb.ru/company/"]  # declared windows-1251: Cyrillic after decoding
    assert sum("а" <= c <= "я" for c in spb) > 500
    rows = extract.compare_extractors(pages)
    for row in rows:
        assert row["resiliparse_chars"] < row["html_chars"] and row["trafilatura_chars"] < row["html_chars"]
    # the two extractors find the same language on most pages and share words on most
    assert sum(r["resiliparse_lang"] == r["trafilatura_lang"] for r in rows) >= 12
    assert np.median([r["word_overlap"] for r in rows]) > 0.3
    status, headers, html = extract.decode_http(next(warc.records(resolve(CC + "whirlwind.warc.gz"),
                                                                  types=("response",))).body)
    text = extract.html_to_text(html)
    assert status.startswith("HTTP/1.1 200") and "Escopete" in text and "<div" not in text
    assert extract.identify_language(text)[0] == "an"  # Aragonese Wikipedia
    with pytest.raises(ValueError, match="unknown extractor"):
        extract.html_to_text(html, "bs4")


@pytest.mark.parametrize("text, lang", [
    ("The patient was told to use the inhaler twice a day and to avoid cold air.", "en"),
    ("Компания предлагает широкий ассортимент продукции для дома и офиса.", "ru"),
    ("我们的公司成立于二零零五年，专业生产各种电子产品。", "zh"),
    ("Die Fahrer der Tour de France fuhren heute durch die Alpen.", "de"),
])
def test_language_identification(text, lang):
    got, p = extract.identify_language(text)
    assert got == lang and 0.5 < p <= 1.0
    assert extract.identify_language("12 345 -- 678") == ("und", 0.0)


def _datatrove_filters():
    """datatrove's Gopher and C4 filters, given llmlab's word and sentence splitting (datatrove's default
    English tokenizer needs NLTK data that cannot be downloaded here): the comparison is of the rules."""
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Same(WordTokenizer):
        def word_tokenize(self, text):
            return quality.words(text)

        def sent_tokenize(self, text):
            return quality.sentences(text)

        def span_tokenize(self, text):
            spans, start = [], 0
            for s in quality.sentences(text):
                i = text.index(s, start)
                spans.append((i, i + len(s)))
                start = i + len(s)
            return spans

    tok = Same()
    return GopherQualityFilter(language=tok), GopherRepetitionFilter(language=tok), C4QualityFilter(language=tok)


def _datatrove(f, text):
    from datatrove.data import Document

    doc = Document(text=text, id="0")
    verdict = f.filter(doc)
    return (None if verdict is True else verdict[1]), doc.text


# datatrove's names for the same reasons
GOPHER_NAMES = {"too_few_words": "gopher_short_doc", "too_many_words": "gopher_long_doc",
                "short_words": "gopher_below_avg_threshold", "long_words": "gopher_above_avg_threshold",
                "hash_ratio": "gopher_too_many_hashes", "ellipsis_ratio": "gopher_too_many_ellipsis",
                "bullet_lines": "gopher_too_many_bullets", "ellipsis_lines": "gopher_too_many_end_ellipsis",
                "few_alphabetic_words": "gopher_below_alpha_threshold", "few_stop_words": "gopher_enough_stop_words",
                "duplicate_paragraphs": "dup_para_frac", "duplicate_paragraph_chars": "dup_para_char_frac",
                "duplicate_lines": "dup_line_frac", "duplicate_line_chars": "dup_line_char_frac"}


def _name(reason):
    if reason is None:
        return None
    return GOPHER_NAMES.get(reason, reason.replace("_grams", "_n_grams"))


PROSE = ("The committee met on Monday to discuss the budget and the plans for the new library. "
         "Members agreed that the building should be open to everyone in the town, and that it should have "
         "a large reading room with good light. The architect will present three designs to the council "
         "before the end of the year, together with an estimate of the cost of each one.")
PROSE2 = ("Rain is expected over the weekend, so the market will move into the old hall. Stall holders "
          "have been asked to arrive early and to bring their own tables. The organisers thank the volunteers "
          "who have given their time to make the market a success this season.")
CRAFTED = {
    "clean": PROSE + "\n" + PROSE2,
    "too_few_words": "The cat sat on the mat with the dog.",
    "long_words": " ".join(["extraordinarily incomprehensibilities"] * 40) + " the and of",
    "hash_ratio": PROSE + " " + "#tag " * 30,
    "ellipsis_lines": "\n".join([PROSE] + ["and then it went on and on..."] * 3),
    "bullet_lines": "\n".join(f"- item number {i} of the long list of things to buy" for i in range(30)),
    "few_stop_words": " ".join(["apples oranges bananas grapes melons cherries"] * 10),
    "few_alphabetic_words": PROSE + " " + " ".join(str(i) for i in range(1000, 1200)),
    "duplicate_lines": "\n".join(["Buy cheap shoes here today, best prices in town."] * 10 + [PROSE]),
    "top_2_gram": ("free shipping " * 40 + PROSE),
    "duplicated_5_grams": PROSE + " " + PROSE,
    "c4_javascript": PROSE + "\nPlease enable JavaScript to view this page.\n" + PROSE2,
    "c4_lorem": PROSE + "\nLorem ipsum dolor sit amet, consectetur adipiscing.\n",
    "c4_curly": PROSE + "\nvar x = {a: 1}; this is code in the page.\n",
    "c4_policy": PROSE + "\nThis site uses cookies to improve your experience.\n" + PROSE2,
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_filters_agree_with_datatrove_on_crafted_documents(name):
    text = CRAFTED[name]
    gq, gr, c4 = _datatrove_filters()
    assert _name(quality.gopher_quality(text)) == _datatrove(gq, text)[0]
    assert _name(quality.gopher_repetition(text)) == _datatrove(gr, text)[0]
    ours_text, ours = quality.c4_filter(text)
    theirs, theirs_text = _datatrove(c4, text)
    assert ours == theirs and (ours is not None or ours_text == theirs_text)
    if name in GOPHER_NAMES:  # each crafted document trips the rule it is named after
        got = quality.gopher_quality(text) if GOPHER_NAMES[name].startswith("gopher") else \
            quality.gopher_repetition(text)
        assert got == name
    elif name.startswith(("top_", "duplicated_")):
        assert quality.gopher_repetition(text) == name
    elif name == "clean":
        assert (quality.gopher_quality(text), quality.gopher_repetition(text), ours) == (None, None, None)
    else:  # C4: a page-level reason, or the page kept without the offending line
        assert ours == {"c4_lorem": "lorem_ipsum", "c4_curly": "curly_bracket"}.get(name)
        assert ours is not None or ("javascript" not in ours_text.lower() and "cookies" not in ours_text)


def test_filters_agree_with_datatrove_on_every_sample_document():
    """Every document of the samples gets the same decision (and C4's kept lines) from both. The one
    documented difference: datatrove's punctuation list lacks the bullet '•', so it counts '•' as a word
    with letters' length; llmlab counts every Unicode punctuation or symbol as a symbol. Where they differ,
    writing the bullets as '-' (a symbol and a bullet for both) must make them agree."""
    gq, gr, c4 = _datatrove_filters()
    docs = _corpus()
    assert len(docs) == 56
    decided = set()
    for text in docs:
        ours, theirs = _name(quality.gopher_quality(text)), _datatrove(gq, text)[0]
        if ours != theirs:
            assert "•" in text
            text = text.replace("•", "-")
            ours, theirs = _name(quality.gopher_quality(text)), _datatrove(gq, text)[0]
        assert ours == theirs
        assert _name(quality.gopher_repetition(text)) == _datatrove(gr, text)[0]
        kept, reason = quality.c4_filter(text)
        theirs_reason, theirs_text = _datatrove(c4, text)
        assert reason == theirs_reason and (reason is not None or kept == theirs_text)
        decided.add(ours)
    assert len(decided) >= 4  # the samples exercise several rules, not just one


def test_toxicity_gradient_auc_and_held_out_quality():
    texts, labels = toxicity.load_davidson()
    assert len(texts) == 24_783 and labels.sum() == 1_430 + 19_190
    x = toxicity.matrix(texts[:300], 1 << 12)
    y = labels[:300].astype(float)
    params = np.random.default_rng(0).normal(0, 0.1, (1 << 12) + 1)
    loss, grad = toxicity.objective(params, x, y, 1e-3)
    p = torch.tensor(params, requires_grad=True)
    xt = torch.tensor(x.toarray())
    z = xt @ p[:-1] + p[-1]
    ref = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y)) + 0.5e-3 * p[:-1].square().sum()
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-9, atol=1e-12)
    # AUC: the Mann-Whitney U statistic over n1 n0, ties included
    from scipy.stats import mannwhitneyu

    s = np.round(np.random.default_rng(1).random(500), 2)
    lab = np.random.default_rng(2).random(500) < 0.3
    u = mannwhitneyu(s[lab], s[~lab]).statistic
    assert toxicity.roc_auc(s, lab) == pytest.approx(u / (lab.sum() * (~lab).sum()))
    # trained on 6,000 tweets: well above the majority class on the held-out rest
    order = np.random.default_rng(0).permutation(len(texts))
    clf = toxicity.train([texts[i] for i in order[:6000]], labels[order[:6000]], iterations=100)
    test = order[-4000:]
    score = clf.score([texts[i] for i in test])
    acc, majority = ((score >= 0.5) == labels[test]).mean(), labels[test].mean()
    assert acc > majority + 0.08 and toxicity.roc_auc(score, labels[test]) > 0.93
    assert clf.score(["The clinic recommends an inhaler for asthma."])[0] < 0.5


def test_shards_round_trip_and_each_rank_reads_its_own(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 1000, rng.integers(50, 400)) for _ in range(40)]
    index = shards.write_shards(docs, tmp_path, shard_tokens=1500, eos=1000, vocab_size=1001)
    train = index["splits"]["train"]
    assert len(train) >= 4 and sum(s["docs"] for s in train) == 40
    flat = np.concatenate([shards.read_shard(tmp_path, s, verify=True) for s in train])
    np.testing.assert_array_equal(flat, np.concatenate([np.append(d, 1000) for d in docs]))
    assert (tmp_path / train[0]["file"]).stat().st_size == 2 * train[0]["tokens"]  # raw uint16
    mine = [shards.rank_shards(index, r, 3) for r in range(3)]
    files = [s["file"] for m in mine for s in m]
    assert sorted(files) == sorted(s["file"] for s in train) and len(set(files)) == len(files)
    for rank in range(3):  # every window is contiguous tokens of one of this rank's shards
        own = [np.asarray(shards.read_shard(tmp_path, s)) for s in mine[rank]]
        stream = shards.stream_batches(tmp_path, rank, 3, batch=4, context=16, seed=5)
        for _ in range(10):
            x, y = next(stream)
            assert x.shape == (4, 16) and x.dtype == np.int64
            np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
            for row, target in zip(x, y, strict=True):
                window = np.append(row, target[-1])
                assert any(np.any(np.all(np.lib.stride_tricks.sliding_window_view(t, 17) == window, axis=1))
                           for t in own)
    with pytest.raises(ValueError, match="shards for 9 ranks"):
        shards.rank_shards(index, 0, 9)
    data = bytearray((tmp_path / train[1]["file"]).read_bytes())
    data[10] ^= 1
    (tmp_path / train[1]["file"]).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        shards.read_shard(tmp_path, train[1], verify=True)
    with pytest.raises(ValueError, match="uint16"):
        shards.write_shards(docs, tmp_path / "big", 100, eos=0, vocab_size=70_000)
    with pytest.raises(ValueError, match=r"\[0, 1001\)"):
        shards.write_shards([[5, 1001]], tmp_path / "bad", 100, eos=1000, vocab_size=1001)


def test_stages_report_accounts_for_every_document_and_byte():
    """The stage functions in a plain loop on crafted documents: every drop has a reason, documents out
    of one stage are the documents into the next, and the dedup step finds exact and near duplicates."""
    s = stages.Settings()
    clf = toxicity.ToxicityClassifier(np.zeros(toxicity.BUCKETS, np.float32), 0.0)  # scores 0.5: keeps all
    clean = PROSE + "\n" + PROSE2
    texts = [clean, clean, clean.replace("Monday", "Tuesday"), PROSE * 2,
             "Короткий текст на русском языке, совсем не английский.", CRAFTED["c4_curly"] + "\n" + PROSE2,
             PROSE2 + "\nCall 555-123-4567 or write to a@b.org today.\nThe school choir will sing at the "
             "station on Friday evening. Tickets are free, but the seats are few and should be booked soon. "
             "Money raised from the sale of programmes will go to the children's hospital."]
    docs = [{"id": i, "source": "x", "url": "", "kind": "text", "text": t, "dropped": "", "bytes_read": len(t.encode())}
            for i, t in enumerate(texts)]
    stages.process_local(docs, s, clf)
    assert [d["dropped"] for d in docs] == ["", "dedup:exact", "dedup:near", "gopher:duplicated_5_grams",
                                            "language:ru", "c4:curly_bracket", ""]
    assert docs[1]["duplicate_of"] == 0 and docs[2]["duplicate_of"] == 0
    assert docs[6]["pii_phone"] == 1 and docs[6]["pii_email"] == 1 and "|||PHONE_NUMBER|||" in docs[6]["text"]
    assert PROSE2 not in docs[6]["text"]  # the line document 0 has already contributed
    report = stages.stage_report(docs)
    assert [r["stage"] for r in report] == list(stages.STAGES)
    for a, b in zip(report, report[1:], strict=False):
        assert a["docs_out"] == b["docs_in"] and a["bytes_out"] == b["bytes_in"]
    for r in report:
        assert r["docs_in"] - r["docs_out"] == sum(r["dropped"].values())
    assert report[-1]["docs_out"] == 2


def test_near_duplicates_are_found_by_their_signatures():
    base = " ".join(f"word{i}" for i in range(300))
    edited = base.replace("word150", "changed")  # Jaccard of 5-gram sets ~0.97
    other = " ".join(f"token{i}" for i in range(300))
    s = stages.Settings()
    keys = [{"id": i, **{k: v for k, v in stages.dedup_keys({"id": i, "text": t, "dropped": ""}, s).items()
                         if k != "id"}} for i, t in enumerate([base, other, edited])]
    decisions = stages.dedup_decisions(keys, s)
    assert decisions[2] == {"drop": "near", "of": 0} and "drop" not in decisions[1]
    assert dedup.jaccard(dedup.shingles(base), dedup.shingles(edited)) > 0.9


def test_off_limits_datatrove_fails_in_the_sandbox():
    """m17's off-limits cheat: Gopher's rules handed to datatrove fail their check in the sandbox (the
    package is blocked), and the other checks stand."""
    from llmlab.labs import get_lab
    from llmlab.platform.grading import grade_source

    lab = get_lab("m17")
    source = lab.submission_source() + (
        "\n\ndef gopher_quality(text, **kwargs):\n"
        "    from datatrove.data import Document\n"
        "    from datatrove.pipeline.filters import GopherQualityFilter\n"
        "    verdict = GopherQualityFilter().filter(Document(text=text, id='0'))\n"
        "    return None if verdict is True else verdict[1]\n")
    by = {c.name: c for c in grade_source(lab, source, trusted=True).checks}
    assert not by["gopher_quality_rules"].passed and "off limits" in by["gopher_quality_rules"].message
    assert by["minhash_signatures"].passed and by["token_shards"].passed


def test_wandb_log_framing_round_trips():
    """llmlab.tracking reads back the LevelDB log framing W&B run files use: records of every size (empty,
    one that ends a few bytes before a block's end so padding follows, several blocks long), from byte 0
    or after a file header; a record cut off at the end is left out."""
    from llmlab import tracking

    rng = np.random.default_rng(0)
    for start in (0, 7):
        records = [rng.bytes(n) for n in (0, 10, 32_768 - 7 - start - 7 - 3, 5, 70_000, 1)]
        data = bytes(start) + tracking.frame_records(records, start)
        assert tracking.log_records(data, start) == records
        assert tracking.log_records(data[:-1], start) == records[:-1]
    # a record that exactly fills a block leaves no padding: the next header starts the next block
    assert len(tracking.frame_records([b"x" * (tracking.BLOCK - 7), b"y"])) == tracking.BLOCK + 8
