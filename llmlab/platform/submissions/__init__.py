"""Submissions for the grading service (``models``, ``store``, ``uploads``, ``backends``, ``service``):
learners with hashed tokens, durable uploads, grading through a backend (Ray jobs, or a LabSubmission
resource on Kubernetes), and reconciliation that loses nothing.

Durability: an upload is written and fsynced, then its row is committed, and only then is it acknowledged.
Grading state moves queued -> running -> graded | failed. Every step is repeatable, so after a crash or
``kill -9`` the reconciler just looks at each unfinished submission again: a queued one is (re)dispatched
under a job id derived from the submission id (a second dispatch finds the first), a running one is polled.
"""

from llmlab.platform.submissions.backends import Backend, KubernetesBackend, Poll, RayBackend, SourceLinks, source_zip
from llmlab.platform.submissions.models import (
    NAME_PATTERN,
    NAME_RULE,
    TOKEN_TTL_DAYS,
    UNFINISHED,
    Base,
    Learner,
    Role,
    Submission,
    SubmissionRejected,
    Token,
    hash_token,
    normalize_name,
)
from llmlab.platform.submissions.service import GradingService, integrity_report
from llmlab.platform.submissions.store import Store
from llmlab.platform.submissions.uploads import unpack

__all__ = ["NAME_PATTERN", "NAME_RULE", "TOKEN_TTL_DAYS", "UNFINISHED", "Backend", "Base", "GradingService",
           "KubernetesBackend", "Learner", "Poll", "RayBackend", "Role", "SourceLinks", "Store", "Submission",
           "SubmissionRejected", "Token", "hash_token", "integrity_report", "normalize_name", "source_zip", "unpack"]
