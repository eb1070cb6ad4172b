"""Lab m17 on a real local Ray head: the pipeline's stages on Ray Data give exactly what the same stage
functions give in a plain loop, the report accounts for the Common Crawl samples as the data manifest
describes them, and DDP training on Ray Train streams each rank its own shards while rank 0 logs to Weights &
Biases offline (the run file read back record by record with llmlab.tracking)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmlab.pipeline import run, stages, toxicity
from llmlab.tracking import wandb_history

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def classifier():
    texts, labels = toxicity.load_davidson()
    return toxicity.train(texts[:6000], labels[:6000], iterations=100)


def test_pipeline_on_ray_data_equals_the_plain_loop_and_ddp_trains_on_its_shards(ray_address, classifier,
                                                                                 tmp_path):
    from llmlab import hf
    from llmlab.distributed.pretrain import PretrainConfig, pretrain
    from llmlab.platform.jobs import local

    gcs = f"127.0.0.1:{local.DEFAULT_GCS_PORT}"  # this process is a driver of the session's head
    cfg = run.PipelineConfig()
    report = run.run(cfg, tmp_path / "data", address=gcs, classifier=classifier)
    by_stage = {r["stage"]: r for r in report["stages"]}
    # the samples: 16 + 1 HTML responses, 25 + 15 WET records, and the truncated WET file's cut record
    assert by_stage["read"]["docs_in"] == 58 and by_stage["read"]["dropped"] == {"truncated": 1}
    assert by_stage["language"]["dropped"]["ru"] >= 10 and by_stage["language"]["dropped"]["zh"] >= 10
    assert 2 <= report["kept"] < 20 and report["shards"]["train"]["shards"] >= 2
    for r in report["stages"]:
        assert r["docs_in"] - r["docs_out"] == sum(r["dropped"].values())
    assert (tmp_path / "data" / "pipeline.png").stat().st_size > 10_000

    # the reference: the same stage functions in a plain loop, no Ray
    s = cfg.settings
    docs = [d for i, src in enumerate(cfg.sources) for d in stages.read(run._resolve(src), i)]
    for d in docs:
        for step, kw in ((stages.extract_text, {}), (stages.language, {}), (stages.gopher, {}), (stages.c4, {}),
                         (stages.toxicity, {"classifier": classifier})):
            step(d, s, **kw)
    decisions = stages.dedup_decisions([stages.dedup_keys(d, s) for d in docs], s)
    for d in docs:
        stages.apply_dedup(d, s, decisions)
        stages.mask(d, s)
    on_ray = [json.loads(line) for line in (tmp_path / "data" / "documents.jsonl").read_text().splitlines()]
    assert [(d["id"], d["dropped"], d.get("text")) for d in on_ray] == \
        [(d["id"], d["dropped"], d["text"] if not d["dropped"] else None) for d in docs]
    assert stages.stage_report(docs) == report["stages"]

    # DDP on Ray Train over the shards, rank 0 logging to W&B offline
    train = PretrainConfig(data=str(tmp_path / "data"), engine="ddp", bf16=False, activation_checkpointing=False,
                           stage_sweep=(), cpus_per_worker=0.5, steps=40, eval_every=20, lr=3e-3,
                           wandb_project="llmlab-test", name="m17-test")
    summary = pretrain(train, tmp_path / "train", address=gcs)
    losses = [h["val_loss"] for h in summary["history"]]
    assert summary["world_size"] == 2 and losses[-1] < losses[0] - 0.5
    assert hf.load(tmp_path / "train" / "model").n_params == summary["params"]
    run_dir = next((tmp_path / "train" / "wandb").glob("offline-run-*"))
    logged = wandb_history(run_dir)
    assert [r["step"] for r in logged] == [h["step"] for h in summary["history"]]
    np.testing.assert_allclose([r["val_loss"] for r in logged], losses, rtol=1e-6)
