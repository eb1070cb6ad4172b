"""The lab contract for every built lab: the reference earns every point, every seeded bug loses some,
and the quick deliverable writes its metrics, report and plots."""

from __future__ import annotations

import json

import pytest

from llmlab.grading import grade_source
from llmlab.labs import built_labs, catalogue, get_lab, run_deliverable

LABS = built_labs()
BUGS = [(lab, bug) for lab in LABS for bug in get_lab(lab).bugs]


def test_registry_lists_twenty_labs_and_the_built_ones():
    labs = catalogue()
    assert [lab.id for lab in labs] == [f"m{i:02d}" for i in range(1, 21)]
    assert {"m01", "m02", "m03", "m04", "m05"} <= set(LABS)


@pytest.mark.parametrize("lab_id", LABS)
def test_lab_contract_is_complete(lab_id):
    lab = get_lab(lab_id)
    assert len(lab.bugs) >= 3, "every lab seeds at least 3 bugs"
    assert lab.checks and all(c.points > 0 and c.description for c in lab.checks)
    assert all(callable(lab.reference_object(name)) for name in lab.names)
    compile(lab.starter_source(), "starter.py", "exec")


@pytest.mark.parametrize("lab_id", LABS)
def test_reference_earns_full_marks(lab_id):
    lab = get_lab(lab_id)
    for _ in range(2):  # fresh random inputs each time
        result = grade_source(lab, lab.submission_source())
        assert result.score == result.max_score, (result.seed, [(c.name, c.message) for c in result.checks
                                                                if not c.passed])


@pytest.mark.parametrize("lab_id, bug", BUGS, ids=[f"{lab}-{bug}" for lab, bug in BUGS])
def test_seeded_bug_is_caught(lab_id, bug):
    lab = get_lab(lab_id)
    result = grade_source(lab, lab.submission_source(bug))
    failed = [c for c in result.checks if not c.passed]
    assert failed, f"seeded bug {bug} passed every check of {lab_id}"
    assert all(c.message for c in failed)


@pytest.mark.parametrize("lab_id", LABS)
def test_quick_deliverable(lab_id, tmp_path):
    record = run_deliverable(lab_id, "quick", tmp_path)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["lab"] == lab_id and on_disk["schema_version"] == 1 and on_disk["metrics"]
    assert record["plots"] and all((tmp_path / p).stat().st_size > 1000 for p in record["plots"])
    assert (tmp_path / "report.md").read_text().startswith(f"# {lab_id}")


@pytest.mark.slow
@pytest.mark.parametrize("lab_id", LABS)
def test_checks_are_stable_across_seeds(lab_id):
    """Over many seeds: the reference never loses a point and every seeded bug always loses some."""
    lab = get_lab(lab_id)
    for seed in range(10):
        result = grade_source(lab, lab.submission_source(), seed=seed)
        assert result.score == result.max_score, (seed, [(c.name, c.message) for c in result.checks if not c.passed])
    for bug in lab.bugs:
        for seed in range(5):
            assert grade_source(lab, lab.submission_source(bug), seed=seed).score < lab.max_score, (bug, seed)
