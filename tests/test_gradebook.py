import datetime as dt
import json

import pytest

from llmlab.contracts import CheckResult, CourseGrade, Environment, GradeResult, Limits
from llmlab.platform.gradebook import WEIGHTS, Gradebook, best_per_lab


def _result(lab: str, learner: str, score: float, max_score: float = 10) -> GradeResult:
    """A result whose checks add up: one passed check worth ``score``, one failed worth the rest."""
    checks = [CheckResult(name="passed", points=score, max_points=score, passed=True),
              CheckResult(name="failed", points=0, max_points=max_score - score, passed=False)]
    return GradeResult(lab=lab, learner=learner, submission_sha256="0" * 64, seed=1, checks=checks,
                       score=score, max_score=max_score, limits=Limits(call_timeout_s=1, total_timeout_s=1,
                                                                        memory_mb=1),
                       started_at=dt.datetime.now(dt.UTC), duration_s=1.0, environment=Environment())


def test_weights_are_the_syllabus_weights():
    assert WEIGHTS == {"quiz": 0.10, "lab": 0.40, "replication": 0.20, "capstone": 0.30}
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_best_score_per_lab_and_pending_components(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    book.record(_result("m01", "ada", 4))
    book.record(_result("m01", "ada", 9))
    book.record(_result("m01", "ada", 7))
    book.record(_result("m02", "ada", 5))
    book.record(_result("m01", "bob", 10))
    s = book.summary("ada")
    assert [(g.lab, g.best, g.attempts) for g in s.labs] == [("m01", 9, 3), ("m02", 5, 1)]
    assert s.components["lab"].score == pytest.approx((0.9 + 0.5) / 2) and s.components["lab"].graded_items == 2
    assert s.components["quiz"].score is None and s.components["capstone"].status == "pending"  # pending, not zero
    assert s.overall == pytest.approx(0.7) and s.weight_covered == pytest.approx(0.4)
    d = json.loads(s.model_dump_json())
    assert d["components"]["replication"]["status"] == "pending" and d["components"]["replication"]["score"] is None
    assert CourseGrade.model_validate(d) == s  # the record the grading service returns too
    assert book.learners() == ["ada", "bob"]
    assert Gradebook(tmp_path / "g.sqlite").summary("bob").labs[0].best == 10  # persisted


def test_results_round_trip_as_json(tmp_path):
    r = _result("m03", "cy", 3)
    assert GradeResult.model_validate_json(r.model_dump_json()) == r
    with pytest.raises(ValueError):
        GradeResult.model_validate({**r.model_dump(), "surprise": 1})  # unknown keys are rejected


def test_best_per_lab_is_one_rule_for_every_source():
    """The local book and the grading service both call it: the maximum score and the number of gradings."""
    rows = [("m02", 3, 10), ("m01", 4, 14), ("m02", 8, 10), ("m01", 2, 14), ("m02", 8, 10)]
    assert [(g.lab, g.best, g.attempts, g.fraction) for g in best_per_lab(rows)] == [("m01", 4, 2, 4 / 14),
                                                                                       ("m02", 8, 3, 0.8)]
    assert best_per_lab([]) == []
