"""The registry of llmlab's 20 labs, and the way to run a lab's deliverable.

A lab is *built* when its module exists (``llmlab/labs/mNN_*.py``, named in ``SYLLABUS``). Lab modules
import torch; this registry does not, so ``llmlab labs`` stays light.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmlab.contracts import SCHEMA_VERSION, LabInfo

if TYPE_CHECKING:
    from llmlab.labs.base import Lab


@dataclass(frozen=True)
class Syllabus:
    id: str
    title: str
    topics: tuple[str, ...]
    module: str  # module under llmlab.labs, whether built yet or not
    component: str = "lab"


SYLLABUS: tuple[Syllabus, ...] = (
    Syllabus("m01", "Linear algebra", ("batched SVD", "projections", "Eckart-Young", "einsum", "QKV attention"),
             "m01_linalg"),
    Syllabus("m02", "Automatic differentiation", ("reverse mode", "tensor engine", "gradient checking",
                                                  "forward mode", "Jacobians and Hessians"), "m02_autodiff"),
    Syllabus("m03", "Probability and information theory", ("entropy", "cross-entropy", "KL", "perplexity",
                                                           "sampling"), "m03_information"),
    Syllabus("m04", "Optimization", ("SGD", "Adam", "AdamW", "Lion", "conditioning", "PL condition"), "m04_optim"),
    Syllabus("m05", "Learning theory", ("VC dimension", "PAC bounds", "bias-variance", "double descent"),
             "m05_theory"),
    Syllabus("m06", "Discrete math and graphs", ("suffix trees", "sparse attention graphs"), "m06_graphs"),
    Syllabus("m07", "Sequence models before transformers", ("n-gram LMs", "Kneser-Ney", "GRU", "LSTM",
                                                            "vanishing gradients"), "m07_sequence"),
    Syllabus("m08", "Attention mechanics", ("scaled dot-product attention", "masks", "attention entropy"),
             "m08_attention"),
    Syllabus("m09", "Transformer layer math", ("RMSNorm", "SwiGLU", "RoPE", "pre-norm blocks", "training"),
             "m09_transformer"),
    Syllabus("m10", "Tokenization and embeddings", ("byte-level BPE", "unigram LM", "isotropy"), "m10_tokenizers"),
    Syllabus("m11", "Scaling laws", ("Chinchilla fits", "IsoFLOP curves", "compute-optimal models"), "m11_scaling"),
    Syllabus("m12", "Distributed pretraining", ("data parallelism", "ZeRO-3", "mixed precision", "Ray Train"),
             "m12_pretraining"),
    Syllabus("m13", "Fine-tuning and adaptation", ("supervised fine-tuning", "LoRA", "instruction data"),
             "m13_finetuning"),
    Syllabus("m14", "RLHF and PPO", ("reward models", "GAE", "PPO clipping", "KL control"), "m14_rlhf"),
    Syllabus("m15", "Evaluation", ("perplexity", "MMLU", "StereoSet", "CrowS-Pairs", "contamination"),
             "m15_evaluation"),
    Syllabus("m16", "Retrieval-augmented generation", ("embeddings", "FAISS", "RAG pipelines", "recall@k"),
             "m16_rag"),
    Syllabus("m17", "Data pipelines", ("Common Crawl WET", "deduplication", "quality and toxicity filters"),
             "m17_data"),
    Syllabus("m18", "Inference optimization and quantization", ("KV cache", "speculative decoding", "INT8",
                                                                 "GPTQ"), "m18_inference"),
    Syllabus("m19", "Serving and monitoring", ("continuous batching", "SLOs", "Prometheus", "load testing"),
             "m19_serving"),
    Syllabus("m20", "Responsible AI", ("privacy", "differential privacy", "toxicity", "bias audits"),
             "m20_responsible"),
)
BY_ID = {s.id: s for s in SYLLABUS}


class UnknownLab(KeyError):
    def __str__(self) -> str:
        return f"unknown lab {self.args[0]!r}; the labs are m01..m20 (see `llmlab labs`)"


class LabNotBuilt(LookupError):
    pass


def _entry(lab_id: str) -> Syllabus:
    try:
        return BY_ID[lab_id.lower()]
    except KeyError:
        raise UnknownLab(lab_id) from None


def module_name(lab_id: str) -> str:
    return f"llmlab.labs.{_entry(lab_id).module}"


def is_built(lab_id: str) -> bool:
    return importlib.util.find_spec(module_name(lab_id)) is not None


def catalogue() -> list[LabInfo]:
    return [LabInfo(id=s.id, number=int(s.id[1:]), title=s.title, topics=list(s.topics),
                    component=s.component, built=is_built(s.id)) for s in SYLLABUS]


def built_labs() -> list[str]:
    return [s.id for s in SYLLABUS if is_built(s.id)]


def get_lab(lab_id: str) -> Lab:
    entry = _entry(lab_id)
    if not is_built(entry.id):
        raise LabNotBuilt(f"lab {entry.id} ({entry.title}) is not built yet")
    return importlib.import_module(module_name(entry.id)).LAB


PROFILES = ("quick", "full")


def run_deliverable(lab_id: str, profile: str, out_dir: Path) -> dict:
    """Run a lab's reference deliverable: writes metrics.json, report.md and PNG plots into ``out_dir``."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
    lab = get_lab(lab_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(lab.module)
    t0, started = time.monotonic(), dt.datetime.now(dt.UTC)
    metrics, report = module.run(profile, out_dir)
    record = {"schema_version": SCHEMA_VERSION, "lab": lab.id, "title": _entry(lab.id).title, "profile": profile,
              "started_at": started.isoformat(), "duration_s": round(time.monotonic() - t0, 3),
              "plots": sorted(p.name for p in out_dir.glob("*.png")), "metrics": metrics}
    record = json.loads(json.dumps(record, default=_plain))  # numpy scalars and arrays -> JSON types
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    (out_dir / "report.md").write_text(f"# {lab.id}: {_entry(lab.id).title} ({profile} profile)\n\n{report.strip()}\n")
    return record


def _plain(obj):
    return obj.tolist() if hasattr(obj, "tolist") else float(obj)
