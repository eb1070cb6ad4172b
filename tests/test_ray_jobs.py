"""Integration with a real local Ray head (started by the test session if none runs, and stopped after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.contracts import GradeResult
from llmlab.platform.jobs import client, local, record
from tests.conftest import m01_source

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def test_head_listens_on_loopback_only(ray_address):
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    ray_lines = [ln for ln in out.splitlines() if any(k in ln for k in ("raylet", "gcs_server", "ray::", "python"))]
    assert ray_lines
    for ln in ray_lines:
        local_addr = ln.split()[3]
        assert local_addr.startswith(("127.", "[::ffff:127.", "[::1]")), ln


@pytest.mark.sandbox
def test_submit_grades_reference_and_bug(ray_address, tmp_path):
    good = tmp_path / "good.py"
    good.write_text(m01_source())
    job_id, address = client.submit_grading("m01", good, learner="ray-test")
    assert client.wait(job_id, address, timeout=300) == "SUCCEEDED"
    result = client.result(job_id, address)
    assert result.score == result.max_score and result.learner == "ray-test"
    job = client.get_job(job_id)
    assert job.lab == "m01" and job.learner == "ray-test" and job.result == result
    assert job_id in [j.job_id for j in client.list_jobs()]


@pytest.mark.sandbox
def test_folder_submission_and_hostile_code_through_ray(ray_address, tmp_path):
    sub = tmp_path / "pkg"
    sub.mkdir()
    (sub / "helpers.py").write_text("import os\ndef boom():\n    os._exit(1)\n")
    (sub / "submission.py").write_text(m01_source() + "\nfrom helpers import boom\n"
                                       "def batched_svd(A, max_sweeps=60):\n    boom()\n"
                                       "print('LLMLAB_RESULT v2 forged record')\n")
    job_id, address = client.submit_grading("m01", sub, learner="mallory")
    assert client.wait(job_id, address, timeout=300) == "SUCCEEDED"
    result = client.result(job_id, address)
    by = {c.name: c for c in result.checks}
    assert not by["svd_any_shape"].passed and "process ended" in by["svd_any_shape"].message
    assert by["qkv_attention"].passed


@pytest.mark.sandbox
def test_cli_submit_wait_prints_the_table(ray_address, tmp_path):
    sub = tmp_path / "s.py"
    sub.write_text(m01_source("attention_mask_ignored"))
    env = {**os.environ, "LLMLAB_GRADEBOOK": str(tmp_path / "g.sqlite")}
    r = subprocess.run([str(Path(sys.executable).with_name("llmlab")), "submit", "m01", str(sub), "--learner", "kim",
                        "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    result = GradeResult.model_validate_json(r.stdout)
    assert 0 < result.score < result.max_score
    book = subprocess.run([str(Path(sys.executable).with_name("llmlab")), "gradebook", "--json"], capture_output=True,
                          text=True, env=env).stdout
    assert json.loads(book)[0]["learner"] == "kim"


@pytest.mark.sandbox
def test_plain_ray_job_submit_on_the_entrypoint(ray_address, tmp_path):
    """The documented way without llmlab's client: `ray job submit --working-dir DIR -- python ray-jobs/grade.py`."""
    workdir = tmp_path / "wd"
    (workdir / "ray-jobs").mkdir(parents=True)
    (workdir / "ray-jobs" / "grade.py").write_text((REPO / "ray-jobs" / "grade.py").read_text())
    (workdir / "mine.py").write_text(m01_source("svd_ascending"))
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    r = subprocess.run([local.ray_executable(), "job", "submit", "--address", ray_address, "--working-dir",
                        str(workdir), "--", "python", "ray-jobs/grade.py", "m01", "mine.py", "--learner", "plain"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = record.decode(r.stdout, GradeResult)
    assert result.learner == "plain" and 0 < result.score < result.max_score


def test_main_job_queues_its_jobs_and_runs_one_ray_workload_at_a_time():
    """`llmlab run` submits at most `parallel` jobs and one Ray workload (its driver takes no CPU) at a time,
    the later labs' deliverables first: submitting all 40 at once on 2 CPUs made Ray fail the jobs still
    waiting after 900 s (RAY_JOB_START_TIMEOUT_SECONDS) and started four Ray Train runs together."""
    from llmlab.platform.course import _plan, _startable

    plan = _plan(["m01", "m12", "m13", "m16"])  # m12 and m13 are Ray workloads
    assert [(j.lab, j.kind) for j in plan][:4] == [("m16", "deliverable"), ("m13", "deliverable"),
                                                   ("m12", "deliverable"), ("m01", "deliverable")]
    first = _startable(plan, parallel=3)
    assert [(j.lab, j.kind) for j in first] == [("m16", "deliverable"), ("m13", "deliverable"),
                                                ("m01", "deliverable")]  # m12 waits for m13
    for job in first:
        job.id, job.status = f"id-{job.lab}", "RUNNING"
    assert _startable(plan, parallel=3) == []
    plan[1].status = "SUCCEEDED"  # m13 done: m12's turn
    assert [(j.lab, j.kind) for j in _startable(plan, parallel=3)] == [("m12", "deliverable")]
    plan[0].status = "FAILED"
    assert [(j.lab, j.kind) for j in _startable(plan, parallel=3)] == [("m12", "deliverable"), ("m16", "grade")]


def test_main_job_starts_the_longest_jobs_first_by_the_last_runs_times(tmp_path):
    """With an earlier run's index.json (each job's seconds), `llmlab run` orders deliverables and gradings
    longest first; a run without times or an unreadable index is passed over."""
    from llmlab.platform.course import _plan, last_times

    (tmp_path / "20260101-000000").mkdir()
    (tmp_path / "20260101-000000" / "index.json").write_text(json.dumps({"labs": [
        {"lab": "m01", "seconds": {"deliverable": 300.0, "grade": 5.0}},
        {"lab": "m12", "seconds": {"deliverable": 100.0, "grade": 20.0}}]}))
    (tmp_path / "20260102-000000").mkdir()
    (tmp_path / "20260102-000000" / "index.json").write_text("{not json")
    (tmp_path / "20260103-000000").mkdir()  # the run being written: no index yet
    times = last_times(tmp_path)
    assert times == {("m01", "deliverable"): 300.0, ("m01", "grade"): 5.0, ("m12", "deliverable"): 100.0,
                     ("m12", "grade"): 20.0}
    plan = _plan(["m01", "m12", "m16"], times)  # m16 unknown: after the known ones
    assert [(j.lab, j.kind) for j in plan] == [("m01", "deliverable"), ("m12", "deliverable"), ("m16", "deliverable"),
                                              ("m12", "grade"), ("m01", "grade"), ("m16", "grade")]
    assert last_times(tmp_path / "nothing-here") == {}


def test_main_job_writes_the_index_and_gradebook(ray_address, tmp_path, monkeypatch):
    """`llmlab run` (make run's job) on one lab: deliverable and grading as Ray jobs, index (with the machine's
    speed at the start), gradebook."""
    from llmlab.platform.course import run_course
    from llmlab.platform.gradebook import Gradebook

    monkeypatch.setenv("LLMLAB_GRADEBOOK", str(tmp_path / "g.sqlite"))
    index = run_course(profile="quick", address=ray_address, labs=["m01"], out_dir=tmp_path / "run")
    page = index.read_text()
    assert "m01/eckart_young_cifar.png" in page and (tmp_path / "run" / "m01" / "eckart_young_cifar.png").exists()
    assert "14/14" in (tmp_path / "run" / "index.md").read_text()
    assert "tokens/s in a reference training step" in (tmp_path / "run" / "index.md").read_text()
    assert json.loads((tmp_path / "run" / "index.json").read_text())["reference_tokens_per_s"] > 0
    assert json.loads((tmp_path / "run" / "m01" / "metrics.json").read_text())["lab"] == "m01"
    summary = Gradebook().summary("reference")
    assert summary.labs[0].lab == "m01" and summary.labs[0].best == summary.labs[0].max_score


def test_ray_backend_stops_a_job_past_its_deadline(ray_address, tmp_path):
    """The grading service's Ray backend: a job still running past the deadline is stopped and fails."""
    import time

    from llmlab.platform.submissions import RayBackend

    sub = tmp_path / "slow.py"
    sub.write_text("import time\ntime.sleep(120)\n")
    backend = RayBackend(ray_address, deadline_seconds=2)
    job_id = f"llmlab-deadline-{os.getpid()}-{int(time.time())}"
    backend.dispatch(job_id, "s1", "m01", sub, "slowpoke")
    poll = backend.poll(job_id)
    while poll.state == "running":
        time.sleep(0.5)
        poll = backend.poll(job_id)
    assert (poll.state, poll.reason) == ("failed", "deadline_exceeded"), poll
    assert client.wait(job_id, ray_address, timeout=60) == "STOPPED"


def test_cli_pretrain_runs_zero3_on_ray_train_as_a_job(ray_address, tmp_path):
    """`llmlab pretrain CONFIG` submits a Ray job whose driver runs a Ray Train TorchTrainer (2 workers,
    DeepSpeed ZeRO-3 bf16 over gloo); the summary comes back as the job's signed record, the gathered model
    lands as a Hugging Face folder that llmlab loads."""
    from llmlab import hf

    (tmp_path / "tiny.toml").write_text("[pretrain]\nsteps = 4\neval_every = 4\neval_batches = 1\n"
                                        "cpus_per_worker = 0.5\nstage_sweep = []\n")
    out = tmp_path / "run"
    r = subprocess.run([str(Path(sys.executable).with_name("llmlab")), "pretrain", str(tmp_path / "tiny.toml"),
                        "--out", str(out), "--address", ray_address], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tokens/s" in r.stdout and "submitted llmlab-pretrain-" in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["zero3_layout_is_partition_flat"]
    assert [h["step"] for h in summary["history"]] == [1, 4] and summary["tokens_per_s"] > 0
    assert hf.load(out / "model").n_params == summary["params"]
    # its model card from the run's metadata (llmlab card's path; its CLI is tested in test_governance.py):
    # without evaluations the card lacks only its results
    from llmlab.governance import card

    path, problems = card.write(out)
    assert problems == ["model-index:missing"] and card.split(path.read_text())[0]["license"] == "mit"
    text = path.read_text()
    assert "| tinyshakespeare | text public domain" in text and "| training tokens | " in text
    assert f"| parameters | {summary['params']:,} |" in text and "2 workers x 0.5 CPU" in text
