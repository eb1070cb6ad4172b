"""The integrity report: MOSS-style fingerprints see through renaming and reformatting, tell independent
code apart, and reach instructors (only) on the grading service, without touching a score."""

from __future__ import annotations

import builtins
import io
import keyword
import tokenize

import pytest
from fastapi.testclient import TestClient

from llmlab.labs import get_lab
from llmlab.platform.grading import integrity
from services.grader.app import create_app
from services.grader.settings import GraderSettings
from tests.test_grader_service_inputs import RecordingBackend, auth

REFERENCE = get_lab("m01").reference_source()


def disguise(source: str) -> str:
    """What a copier does: every non-builtin name renamed, comments added, blank lines moved."""
    names: dict[str, str] = {}
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string) and not hasattr(builtins, tok.string) \
                and tok.string not in ("torch", "math", "F", "annotations", "__future__"):
            tok = tok._replace(string=names.setdefault(tok.string, f"my_thing_{len(names)}"))
        elif tok.type == tokenize.COMMENT:
            tok = tok._replace(string="# rewritten by me")
        out.append(tok)
    return "# my own work, honest\n" + tokenize.untokenize(out).replace("\n\n\n", "\n\n")


def test_renamed_reference_is_recognised():
    copy = disguise(REFERENCE)
    assert copy != REFERENCE and "batched_svd" not in copy
    fp = integrity.fingerprints(copy)
    assert integrity.containment(fp, integrity.fingerprints(REFERENCE)) >= 0.95


def test_independent_code_is_not_and_given_code_does_not_count():
    ref = integrity.fingerprints(REFERENCE)
    other = integrity.fingerprints(get_lab("m06").reference_source())
    assert integrity.containment(other, ref) < 0.1
    starter = get_lab("m01").starter_source()  # the signatures every learner was given match the reference...
    assert integrity.containment(integrity.fingerprints(starter), ref) > 0.3
    assert integrity.report(starter, REFERENCE, [], base=starter).reference == 0  # ...and are left out


def test_tokens_are_normalised():
    a = integrity.tokens("def f(x):\n    '''doc'''\n    return x + 1  # c\n")
    b = integrity.tokens("def g(y):\n    return y + 2\n")
    assert a == b and "V" in a and "N" in a


@pytest.fixture
def service(tmp_path):
    cfg = GraderSettings(database_url=f"sqlite:///{tmp_path / 'g.sqlite'}", files_dir=tmp_path / "files")
    app = create_app(cfg, backend=RecordingBackend())
    store = app.state.store
    tokens = {n: store.add_learner(n, "instructor" if n == "prof" else "learner") for n in ("prof", "ana", "ben", "cy")}
    with TestClient(app) as client:
        yield client, tokens


def test_instructors_see_the_report_learners_do_not(service):
    client, tok = service
    ids = {}
    for who, source in (("ana", REFERENCE), ("ben", disguise(REFERENCE)), ("cy", get_lab("m01").starter_source())):
        r = client.post("/v1/submissions", data={"lab": "m01"}, files={"file": ("m01.py", source.encode())},
                        headers=auth(tok[who]))
        assert r.status_code == 202, r.text
        ids[who] = r.json()["id"]
    mine = client.get(f"/v1/submissions/{ids['ben']}", headers=auth(tok["ben"])).json()
    assert mine["integrity"] is None
    view = client.get(f"/v1/submissions/{ids['ben']}", headers=auth(tok["prof"])).json()
    report = view["integrity"]
    assert report["reference"] >= 0.95 and view["score"] is None  # reported, never scored
    by = {m["learner"]: m["similarity"] for m in report["peers"]}
    assert by["ana"] >= 0.95 and by["cy"] < 0.1
    assert client.get(f"/v1/submissions/{ids['cy']}", headers=auth(tok["prof"])).json()["integrity"]["reference"] < 0.1
