"""Records shared by the CLI, the grader, Ray jobs and (later) the services and the operator.

Light on purpose: pydantic only, never torch, so that a grader client or a service can import it cheaply.
Every record carries ``schema_version`` so that stored results can be read back after the schema grows.
"""

from __future__ import annotations

import datetime as dt
import platform as _platform
import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

LabId = str  # "m01".."m20"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckResult(_Record):
    """One graded check of one submission."""

    name: str
    points: float = Field(ge=0)  # points earned: all of max_points when passed, else none
    max_points: float = Field(ge=0)
    passed: bool
    message: str = ""
    duration_s: float = 0.0

    @model_validator(mode="after")
    def _all_or_nothing(self) -> CheckResult:
        if self.points != (self.max_points if self.passed else 0.0):
            raise ValueError(f"check {self.name!r}: {self.points} points for a check that "
                             f"{'passed' if self.passed else 'failed'} (max {self.max_points})")
        return self


class Environment(_Record):
    python: str = Field(default_factory=lambda: sys.version.split()[0])
    platform: str = Field(default_factory=_platform.platform)
    llmlab: str = ""
    torch: str | None = None
    host: str = Field(default_factory=_platform.node)


class Limits(_Record):
    """Resource limits the submission ran under."""

    call_timeout_s: float  # one call into the submission
    total_timeout_s: float  # the whole grading
    memory_mb: int  # address-space limit of the submission's process
    judge_timeout_s: float = 60.0  # the grader's own judging of one check


class GradeResult(_Record):
    """The defined result record of one grading: printed by `llmlab grade --json`, returned by Ray jobs,
    stored in the gradebook."""

    schema_version: int = SCHEMA_VERSION
    lab: LabId
    learner: str = "anonymous"
    submission_sha256: str
    seed: int  # drew every random check input; re-grading with it reproduces the inputs
    checks: list[CheckResult]
    score: float
    max_score: float
    status: Literal["graded", "error"] = "graded"
    error: str | None = None  # why grading as a whole could not judge the submission (e.g. it won't import)
    limits: Limits
    started_at: dt.datetime
    duration_s: float
    environment: Environment
    isolation: Literal["bubblewrap", "none"] = "none"  # the OS sandbox the submission ran in
    output: str = ""  # what the submission printed (stdout and stderr, capped, control characters escaped)
    findings: list[str] = []  # the static scan: off-limits calls and indirection (reported, not scored)

    @model_validator(mode="after")
    def _earned(self) -> GradeResult:
        earned = sum(c.points for c in self.checks)
        if not 0 <= self.score <= self.max_score:
            raise ValueError(f"score {self.score} outside [0, {self.max_score}]")
        if abs(self.score - earned) > 1e-9 or abs(self.max_score - sum(c.max_points for c in self.checks)) > 1e-9:
            raise ValueError(f"score {self.score}/{self.max_score} is not the sum of the checks' points "
                             f"({earned}/{sum(c.max_points for c in self.checks)})")
        return self

    @property
    def fraction(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0


class LabInfo(_Record):
    id: LabId
    number: int
    title: str
    topics: list[str]
    deliverable: list[str]
    component: Literal["quiz", "lab", "replication", "capstone"]
    built: bool


class JobRecord(_Record):
    """A lab grading submitted as a Ray job, as `llmlab jobs` shows it."""

    job_id: str
    lab: LabId | None = None
    learner: str | None = None
    status: str
    address: str
    submitted_at: dt.datetime | None = None
    message: str | None = None
    result: GradeResult | None = None


class LabBest(_Record):
    """A learner's best grading of one lab (or other graded item), and how many gradings there were."""

    lab: LabId
    best: float = Field(ge=0)
    max_score: float = Field(gt=0)
    attempts: int = Field(ge=1)

    @property
    def fraction(self) -> float:
        return self.best / self.max_score


class ComponentGrade(_Record):
    """One assessment component (proof quizzes, labs, replication, capstone): pending until graded."""

    weight: float
    score: float | None  # the mean best fraction over its graded items; None = pending, never zero
    status: Literal["graded", "pending"]
    graded_items: int
    items: int


class CourseGrade(_Record):
    """A learner's gradebook: the best per lab, the components with their weights, the overall figure over
    the graded components (and the share of the course weight it covers). The local gradebook and the
    grading service give the same record."""

    schema_version: int = SCHEMA_VERSION
    learner: str
    labs: list[LabBest]
    components: dict[str, ComponentGrade]
    overall: float | None
    weight_covered: float
