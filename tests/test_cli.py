"""The `llmlab` command as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LLMLAB = str(Path(sys.executable).with_name("llmlab"))


def llmlab(*args: str, env_db: Path | None = None, **kw) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_db:
        env["LLMLAB_GRADEBOOK"] = str(env_db)
    return subprocess.run([LLMLAB, *args], capture_output=True, text=True, env=env, timeout=600, **kw)


@pytest.mark.parametrize("verb", [[], ["labs"], ["lab", "show"], ["lab", "run"], ["grade"], ["submit"], ["jobs"],
                                  ["job"], ["gradebook"], ["run"], ["lab", "starter"]])
def test_every_verb_has_help(verb):
    r = llmlab(*verb, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout


def test_labs_json_lists_built_labs():
    labs = json.loads(llmlab("labs", "--json").stdout)
    assert len(labs) == 20 and labs[0]["id"] == "m01" and labs[0]["built"] is True


def test_lab_show_prints_the_spec():
    r = llmlab("lab", "show", "m01")
    assert r.returncode == 0 and "def batched_svd(A: Tensor" in r.stdout and "svd_any_shape" in r.stdout


def test_errors_are_one_line_without_traceback(tmp_path):
    for args, code in ((["grade", "m77", "x.py"], 2), (["grade", "m01", str(tmp_path / "none.py")], 2),
                       (["card", str(tmp_path)], 2), (["lab", "run", "m01", "--profile", "huge"], 2),
                       (["serve", "retrieval"], 2),  # neither a store nor shards
                       (["serve", "retrieval", "--data", str(tmp_path), "--shard", "http://127.0.0.1:1"], 2)):
        r = llmlab(*args)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and "error:" in r.stderr


def test_grade_starter_json_and_gradebook(tmp_path):
    db = tmp_path / "book.sqlite"
    starter = tmp_path / "mine.py"
    assert llmlab("lab", "starter", "m01", "--out", str(starter)).returncode == 0
    r = llmlab("grade", "m01", str(starter), "--json", "--learner", "zoe", env_db=db)
    assert r.returncode == 0, r.stderr  # graded, whatever the score
    result = json.loads(r.stdout)
    assert result["score"] == 0 and result["learner"] == "zoe"
    assert "NotImplementedError" in result["checks"][0]["message"]
    book = json.loads(llmlab("gradebook", "--json", "--learner", "zoe", env_db=db).stdout)
    assert book[0]["labs"][0]["lab"] == "m01" and book[0]["components"]["quiz"]["status"] == "pending"
    table = llmlab("grade", "m01", str(starter), "--no-record", env_db=db).stdout
    assert "score 0/" in table and "fail" in table
    # --check: only the named checks run; an unknown name is a usage error that lists the lab's checks
    one = json.loads(llmlab("grade", "m01", str(starter), "--json", "--no-record", "--check", "projection").stdout)
    ran = [c["name"] for c in one["checks"] if not c["message"].startswith("not run")]
    assert ran == ["projection"] and "NotImplementedError" in one["checks"][2]["message"]
    r = llmlab("grade", "m01", str(starter), "--check", "nope", "--no-record")
    assert r.returncode == 2 and "no check nope" in r.stderr and "svd_any_shape" in r.stderr


def test_light_modules_do_not_import_torch():
    """The light install (contracts, CLI, gradebook, grader client) must not need torch."""
    code = ("import sys, llmlab.cli, llmlab.contracts, llmlab.platform.gradebook, llmlab.platform.jobs.client, "
            "llmlab.platform.grading_client, llmlab.data.catalog, llmlab.labs;"
            "llmlab.labs.catalogue(); assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_moved_modules_still_import_with_a_deprecation():
    """Old import paths (llmlab.gradebook, llmlab.jobs.client...) give the very same module objects as
    llmlab.platform.*, with a DeprecationWarning naming the new place."""
    code = ("import warnings; warnings.simplefilter('error');"
            "import llmlab.platform.jobs.client as new\n"
            "try:\n import llmlab.jobs.client\nexcept DeprecationWarning as w: print(w)\n"
            "warnings.simplefilter('ignore'); import llmlab.jobs.client as old, llmlab.gradebook as gb,"
            " llmlab.platform.gradebook as gb2; assert old is new and gb is gb2"
            " and old.__spec__.name == 'llmlab.platform.jobs.client'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "llmlab.jobs moved to llmlab.platform.jobs" in r.stdout, r.stdout + r.stderr
