"""Lab m17's pipeline on a real local Ray head, as `llmlab pipeline` submits it: its stages on Ray Data give
exactly what the same stage functions give in a plain loop, and the report accounts for the Common Crawl
samples as the data manifest describes them. (DDP on the shards, logged to W&B and read back, is the m17
deliverable's test in test_labs.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.pipeline import run, stages, toxicity

pytestmark = pytest.mark.ray


def test_pipeline_verb_rejects_bad_configs_before_submitting(tmp_path):
    (tmp_path / "c.json").write_text('{"vocab_sise": 1000}')
    r = subprocess.run([str(Path(sys.executable).with_name("llmlab")), "pipeline", "--config", str(tmp_path / "c.json"),
                        "--address", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "vocab_sise" in r.stderr and "Traceback" not in r.stderr


def test_pipeline_job_on_ray_data_equals_the_plain_loop(ray_address, tmp_path):
    """`llmlab pipeline` runs as a Ray job on the session's head; the documents it writes are exactly what
    the stage functions give in a plain loop here (with the toxicity classifier it trained and saved)."""
    data = tmp_path / "data"
    r = subprocess.run([str(Path(sys.executable).with_name("llmlab")), "pipeline", "--out", str(data),
                        "--address", ray_address], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted llmlab-pipeline-" in r.stderr and "language" in r.stdout
    cfg, report = run.PipelineConfig(), json.loads((data / "report.json").read_text())
    by_stage = {r["stage"]: r for r in report["stages"]}
    # the samples: 16 + 1 HTML responses, 25 + 15 WET records, and the truncated WET file's cut record
    assert by_stage["read"]["docs_in"] == 58 and by_stage["read"]["dropped"] == {"truncated": 1}
    assert by_stage["language"]["dropped"]["ru"] >= 10 and by_stage["language"]["dropped"]["zh"] >= 10
    assert 2 <= report["kept"] < 20 and report["shards"]["train"]["shards"] >= 2
    assert report["toxicity_classifier"]["auc"] > 0.95
    for row in report["stages"]:
        assert row["docs_in"] - row["docs_out"] == sum(row["dropped"].values())
    assert (data / "pipeline.png").stat().st_size > 10_000
    classifier = toxicity.ToxicityClassifier.load(data / "toxicity.npz")

    # the reference: the same stage functions in a plain loop, no Ray
    docs = run.process_local(cfg, classifier)
    on_ray = [json.loads(line) for line in (data / "documents.jsonl").read_text().splitlines()]
    assert [(d["id"], d["dropped"], d.get("text")) for d in on_ray] == \
        [(d["id"], d["dropped"], d["text"] if not d["dropped"] else None) for d in docs]
    assert stages.stage_report(docs) == report["stages"]
