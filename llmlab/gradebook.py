"""The gradebook: every grading result in SQLite, the best per learner and lab, and the course weights.

Assessment weights (from the syllabus): proof quizzes 10%, hands-on labs 40%, paper replication 20%,
engineering capstone 30%. A component nobody has graded yet is *pending*, never zero; the overall figure is
over the graded components only, and says how much of the course weight it covers.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from llmlab.contracts import GradeResult

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


@dataclass
class LabGrade:
    lab: str
    best: float
    max_score: float
    attempts: int

    @property
    def fraction(self) -> float:
        return self.best / self.max_score if self.max_score else 0.0


@dataclass
class Summary:
    learner: str
    labs: list[LabGrade]
    components: dict[str, float | None] = field(default_factory=dict)  # None = pending
    overall: float | None = None
    weight_covered: float = 0.0
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # component -> (graded, in syllabus)

    def as_dict(self) -> dict:
        return {"learner": self.learner,
                "labs": [{"lab": g.lab, "best": g.best, "max_score": g.max_score, "attempts": g.attempts}
                         for g in self.labs],
                "components": {k: {"weight": WEIGHTS[k], "score": v, "status": "pending" if v is None else "graded",
                                   "graded_items": self.counts[k][0], "items": self.counts[k][1]}
                               for k, v in self.components.items()},
                "overall": self.overall, "weight_covered": self.weight_covered}


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

    def summary(self, learner: str) -> Summary:
        with self._db() as db:
            rows = db.execute("SELECT lab, MAX(score), max_score, COUNT(*) FROM results WHERE learner = ? "
                              "GROUP BY lab ORDER BY lab", (learner,)).fetchall()
        return summarize(learner, [LabGrade(lab, best, mx, n) for lab, best, mx, n in rows])


def summarize(learner: str, grades: list[LabGrade]) -> Summary:
    """Combine a learner's best grade per lab with the course weights (shared with the grading service)."""
    from llmlab.labs import BY_ID, SYLLABUS

    by_component: dict[str, list[float]] = {k: [] for k in WEIGHTS}
    for g in grades:
        by_component[BY_ID[g.lab].component if g.lab in BY_ID else "lab"].append(g.fraction)
    # a component's score is the mean best fraction over its graded items; none graded -> pending
    components = {k: (sum(f) / len(f) if f else None) for k, f in by_component.items()}
    counts = {k: (len(by_component[k]), sum(1 for s in SYLLABUS if s.component == k)) for k in WEIGHTS}
    covered = sum(WEIGHTS[k] for k, v in components.items() if v is not None)
    overall = (sum(WEIGHTS[k] * v for k, v in components.items() if v is not None) / covered
               if covered else None)
    return Summary(learner, grades, components, overall, covered, counts)
