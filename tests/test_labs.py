"""The lab contract for every built lab: the reference earns every point, every seeded bug loses some,
and the quick deliverable writes its metrics, report and plots."""

from __future__ import annotations

import json

import pytest

from llmlab.grading import grade_source
from llmlab.jobs.deliverable_job import DeliverableRecord
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
    DeliverableRecord(lab=lab_id, profile="quick", out_dir=str(tmp_path), metrics=record).model_dump_json()
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


def test_deliverables_reach_their_stated_results(tmp_path):
    """The quick deliverables' headline numbers, as the issue states them."""
    m01 = run_deliverable("m01", "quick", tmp_path / "m01")["metrics"]
    assert m01["svd_max_rel_error"] <= 1e-6 and len(m01["svd_rel_error_per_matrix"]) == m01["matrices"]
    assert m01["eckart_young_max_gap"] < 1e-10 and m01["attention_max_abs_error_vs_sdpa"] < 1e-6
    m04 = run_deliverable("m04", "quick", tmp_path / "m04")["metrics"]
    assert m04["gd_rate_max_gap_to_theory"] < 1e-9 and m04["pl_bound_holds"]
    assert all(acc > 0.2 for acc in m04["cifar_test_accuracy"].values())  # chance is 0.1
    m05 = run_deliverable("m05", "quick", tmp_path / "m05")["metrics"]
    assert m05["max_gap_in_standard_errors"] < 3  # bias^2 + variance + noise = MSE within Monte Carlo error
    assert m05["vc"]["halfplane"]["d"] == 3 and m05["vc"]["rectangle"]["d"] == 4
    assert 0.6 * 100 <= m05["double_descent"]["peak_at"] <= 1.5 * 100  # near the interpolation threshold n
