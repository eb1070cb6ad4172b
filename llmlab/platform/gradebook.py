"""The gradebook: every grading result in SQLite, the best per learner and lab, and the course weights.

Assessment weights (from the syllabus): proof quizzes 10%, hands-on labs 40%, paper replication 20%,
engineering capstone 30%. A component nobody has graded yet is *pending*, never zero; the overall figure is
over the graded components only, and says how much of the course weight it covers.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from llmlab.contracts import ComponentGrade, CourseGrade, GradeResult, LabBest

WEIGHTS = {"quiz": 0.10, "lab": 0.40, "replication": 0.20, "capstone": 0.30}
COMPONENT_NAMES = {"quiz": "proof quizzes", "lab": "hands-on labs", "replication": "paper replication",
                   "capstone": "engineering capstone"}


def default_path() -> Path:
    if os.environ.get("LLMLAB_GRADEBOOK"):
        return Path(os.environ["LLMLAB_GRADEBOOK"])
    from platformdirs import user_data_dir

    return Path(user_data_dir("llmlab")) / "gradebook.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    learner TEXT NOT NULL,
    lab TEXT NOT NULL,
    score REAL NOT NULL,
    max_score REAL NOT NULL,
    submission_sha256 TEXT NOT NULL,
    started_at TEXT NOT NULL,
    source TEXT NOT NULL,
    result_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_learner_lab ON results (learner, lab);
"""


def best_per_lab(results: Iterable[tuple[str, float, float]]) -> list[LabBest]:
    """(lab, score, max_score) per grading -> the best score and the number of gradings per lab, by lab id."""
    best: dict[str, LabBest] = {}
    for lab, score, max_score in results:
        g = best.get(lab)
        best[lab] = (LabBest(lab=lab, best=score, max_score=max_score, attempts=1) if g is None else
                     g.model_copy(update={"best": max(g.best, score), "attempts": g.attempts + 1}))
    return [best[lab] for lab in sorted(best)]


class Gradebook:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def record(self, result: GradeResult, source: str = "local") -> None:
        with self._db() as db:
            db.execute("INSERT INTO results (learner, lab, score, max_score, submission_sha256, started_at, source,"
                       " result_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (result.learner, result.lab, result.score, result.max_score, result.submission_sha256,
                        result.started_at.isoformat(), source, result.model_dump_json()))

    def learners(self) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT learner FROM results ORDER BY learner")]

    def summary(self, learner: str) -> CourseGrade:
        with self._db() as db:
            rows = db.execute("SELECT lab, score, max_score FROM results WHERE learner = ? ORDER BY id",
                              (learner,)).fetchall()
        return course_grade(learner, rows)


def course_grade(learner: str, results: Iterable[tuple[str, float, float]]) -> CourseGrade:
    """A learner's gradebook from their gradings, (lab, score, max_score) each: the one place where the best
    per lab and the weighted course figure are computed (the local gradebook and the grading service)."""
    from llmlab.labs import BY_ID, SYLLABUS

    labs = best_per_lab(results)
    by_component: dict[str, list[float]] = {k: [] for k in WEIGHTS}
    for g in labs:
        by_component[BY_ID[g.lab].component if g.lab in BY_ID else "lab"].append(g.fraction)
    scores = {k: (sum(f) / len(f) if f else None) for k, f in by_component.items()}
    components = {k: ComponentGrade(weight=WEIGHTS[k], score=v, status="pending" if v is None else "graded",
                                    graded_items=len(by_component[k]),
                                    items=sum(1 for s in SYLLABUS if s.component == k))
                  for k, v in scores.items()}
    covered = sum(WEIGHTS[k] for k, v in scores.items() if v is not None)
    overall = sum(WEIGHTS[k] * v for k, v in scores.items() if v is not None) / covered if covered else None
    return CourseGrade(learner=learner, labs=labs, components=components, overall=overall, weight_covered=covered)
