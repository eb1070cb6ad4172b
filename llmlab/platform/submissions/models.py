"""The submission store's tables (learners, hashed tokens, submissions) and the rules for names and tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from typing import Literal

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Role = Literal["learner", "instructor"]
UNFINISHED = ("queued", "running")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
NAME_RULE = ("1-63 characters: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit "
             "(NFKC-normalised and lower-cased first; unique)")
TOKEN_TTL_DAYS = 90


def normalize_name(name: str) -> str:
    """A learner's name as stored: NFKC (fullwidth and other compatibility forms folded), lower-cased, and
    matched against NAME_PATTERN, so look-alike Unicode, separators, NUL and case variants are refused."""
    folded = unicodedata.normalize("NFKC", name).lower() if isinstance(name, str) else ""
    if not re.fullmatch(NAME_PATTERN, folded):
        raise ValueError(f"invalid learner name {name!r}: {NAME_RULE}")
    return folded


def hash_token(token: str) -> str:
    # tokens are 256-bit random strings, so a plain digest is safe (no password-style stretching needed)
    return hashlib.sha256(token.encode()).hexdigest()


class Base(DeclarativeBase):
    pass


class Learner(Base):
    __tablename__ = "learners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="learner")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("learner_id", "idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    learner_id: Mapped[int] = mapped_column(ForeignKey("learners.id"), index=True)
    lab: Mapped[str] = mapped_column(String(8))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SubmissionRejected(ValueError):
    """A request the service refuses, with the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after
