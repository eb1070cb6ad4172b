"""The submission store on SQLAlchemy (SQLite or PostgreSQL): learners, tokens, submissions, their files."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from pathlib import Path

from sqlalchemy import (
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import sessionmaker

from llmlab.platform.submissions.models import (
    TOKEN_TTL_DAYS,
    UNFINISHED,
    Base,
    Learner,
    Role,
    Submission,
    Token,
    _now,
    hash_token,
    normalize_name,
)

log = logging.getLogger(__name__)


class Store:
    """Learners, tokens and submissions in SQL (SQLite by default, PostgreSQL by URL), files on disk."""

    def __init__(self, url: str, files_dir: Path, token_ttl_days: int = TOKEN_TTL_DAYS):
        if url.startswith("sqlite:///"):  # a first run: the folder of the database file may not exist yet
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.token_ttl = dt.timedelta(days=token_ttl_days)
        self._migrate()
        self.files_dir = Path(files_dir)
        self.files_dir.mkdir(parents=True, exist_ok=True)

    def _migrate(self) -> None:
        """Columns added since a database was made (create_all makes tables, not columns). Tokens from before
        expiry existed expire one TTL from the upgrade."""
        if "expires_at" not in {c["name"] for c in inspect(self.engine).get_columns("tokens")}:
            with self.engine.begin() as c:
                c.execute(text("ALTER TABLE tokens ADD COLUMN expires_at TIMESTAMP"))
        with self.session.begin() as s:
            for t in s.scalars(select(Token).where(Token.expires_at.is_(None))):
                t.expires_at = _now() + self.token_ttl

    # --- people ---------------------------------------------------------------------------------------
    def add_learner(self, name: str, role: Role = "learner") -> str:
        """Create a learner (or instructor) and return a new token: shown once, stored hashed. The name is
        normalised (``normalize_name``) and must be unique; ValueError otherwise."""
        if role not in ("learner", "instructor"):
            raise ValueError("role must be 'learner' or 'instructor'")
        name = normalize_name(name)
        with self.session.begin() as s:
            if s.scalar(select(Learner).where(func.lower(Learner.name) == name)):
                raise ValueError(f"learner {name!r} exists; use issue_token for a new token")
            s.add(Learner(name=name, role=role))
        return self.issue_token(name)

    def _learner(self, s, name: str) -> Learner:
        try:
            folded = normalize_name(name)
        except ValueError:
            raise LookupError(f"no learner {name!r}") from None
        learner = s.scalar(select(Learner).where(func.lower(Learner.name) == folded))
        if learner is None:
            raise LookupError(f"no learner {name!r}")
        return learner

    def issue_token(self, name: str, revoke_others: bool = False) -> str:
        """A new token for ``name``, valid for the store's TTL; ``revoke_others`` makes it a rotation."""
        token = "llm_" + secrets.token_urlsafe(32)
        with self.session.begin() as s:
            learner = self._learner(s, name)
            if revoke_others:
                for t in s.scalars(select(Token).where(Token.learner_id == learner.id, Token.revoked.is_(False))):
                    t.revoked = True
            s.add(Token(learner_id=learner.id, token_sha256=hash_token(token), expires_at=_now() + self.token_ttl))
        return token

    def revoke_tokens(self, name: str) -> int:
        with self.session.begin() as s:
            learner = self._learner(s, name)
            tokens = s.scalars(select(Token).where(Token.learner_id == learner.id, Token.revoked.is_(False))).all()
            for t in tokens:
                t.revoked = True
            return len(tokens)

    def authenticate(self, token: str) -> Learner | None:
        if not token.isascii() or len(token) > 200:
            return None
        with self.session() as s:
            return s.scalar(select(Learner).join(Token).where(Token.token_sha256 == hash_token(token),
                                                               Token.revoked.is_(False), Token.expires_at > _now()))

    def learners(self) -> list[Learner]:
        with self.session() as s:
            return list(s.scalars(select(Learner).order_by(Learner.name)))

    # --- submissions --------------------------------------------------------------------------------
    def get(self, submission_id: str) -> Submission | None:
        with self.session() as s:
            return s.get(Submission, submission_id)

    def list(self, learner_id: int | None = None, limit: int = 100) -> list[Submission]:
        with self.session() as s:
            q = select(Submission).order_by(Submission.created_at.desc()).limit(limit)
            if learner_id is not None:
                q = q.where(Submission.learner_id == learner_id)
            return list(s.scalars(q))

    def scores(self, learner_id: int) -> list[tuple[str, float, float]]:
        """(lab, score, max_score) of the learner's graded submissions, oldest first (for the gradebook)."""
        with self.session() as s:
            return [tuple(row) for row in s.execute(
                select(Submission.lab, Submission.score, Submission.max_score)
                .where(Submission.learner_id == learner_id, Submission.state == "graded")
                .order_by(Submission.created_at))]

    def unfinished(self) -> list[Submission]:
        with self.session() as s:
            return list(s.scalars(select(Submission).where(Submission.state.in_(UNFINISHED))))

    def recent_count(self, learner_id: int, seconds: int) -> int:
        since = _now() - dt.timedelta(seconds=seconds)
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Submission).where(
                Submission.learner_id == learner_id, Submission.created_at >= since)) or 0

    def by_idempotency_key(self, learner_id: int, key: str) -> Submission | None:
        with self.session() as s:
            return s.scalar(select(Submission).where(Submission.learner_id == learner_id,
                                                     Submission.idempotency_key == key))

    def update(self, submission_id: str, **fields) -> Submission:
        with self.session.begin() as s:
            sub = s.get(Submission, submission_id)
            for k, v in fields.items():
                setattr(sub, k, v)
            return sub

    def learner_name(self, learner_id: int) -> str:
        with self.session() as s:
            return s.get(Learner, learner_id).name

    def path(self, submission_id: str) -> Path:
        return self.files_dir / submission_id / "submission"
