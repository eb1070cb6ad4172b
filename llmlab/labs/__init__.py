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
from llmlab.stages import plain

if TYPE_CHECKING:
    from llmlab.labs.base import Lab


@dataclass(frozen=True)
class Syllabus:
    """One row of the course (``shared/SYLLABUS.md``): the graded deliverable is split into the items each
    of the lab's checks names (``Lab.check(..., grades=ITEM)``)."""
    id: str
    title: str
    topics: tuple[str, ...]
    deliverable: tuple[str, ...]
    module: str  # module under llmlab.labs, whether built yet or not
    component: str = "lab"


S = Syllabus
SYLLABUS: tuple[Syllabus, ...] = (
    S("m01", "Linear algebra", ("vector spaces", "norms", "SVD", "tensor contractions"),
      ("batched SVD with reconstruction error <= 1e-6", "Q/K/V attention with torch.einsum"), "m01_linalg"),
    S("m02", "Multivariate calculus and autodiff", ("Jacobians", "Hessians", "chain rule in matrix form",
                                                    "forward vs reverse mode"),
      ("an autodiff engine (micrograd-like)", "gradient check of a transformer feed-forward block"), "m02_autodiff"),
    S("m03", "Probability and information theory", ("KL divergence", "entropy", "cross-entropy"),
      ("perplexity on WikiText-2", "temperature sampler and sampling entropy (masked softmax)"), "m03_information"),
    S("m04", "Optimization theory", ("SGD", "Adam", "Lion", "convexity", "Polyak-Lojasiewicz condition"),
      ("SGD, Adam and Lion for the benchmark", "convergence on a quadratic bowl (PL rate)",
       "a small CNN on CIFAR-tiny"), "m04_optim"),
    S("m05", "Fundamental learning theory", ("PAC bounds", "VC dimension", "bias-variance", "double descent"),
      ("VC dimension of thresholds and axis-aligned splits", "bias-variance visualizer on synthetic data"),
      "m05_theory"),
    S("m06", "Discrete math and graphs", ("prefix/suffix trees", "DAG compression", "sparse attention graphs"),
      ("suffix tree of a given text", "export to Graphviz", "sparse attention graphs"), "m06_graphs"),
    S("m07", "Sequence models before transformers", ("n-grams", "RNN", "LSTM", "GRU equations",
                                                     "vanishing/exploding gradients"),
      ("trigram LM", "GRU LM", "hidden-state and gradient norm tracking"), "m07_sequence"),
    S("m08", "Attention mechanics", ("scaled dot-product", "O(n^2 d) cost", "temperature", "masking"),
      ("single-head attention from scratch", "entropy vs temperature on a toy sequence"), "m08_attention"),
    S("m09", "Transformer layer math", ("sinusoidal and rotary encodings", "residual paths", "layer norm"),
      ("two-layer transformer trained on Tiny Shakespeare", "custom positional encodings", "gradient-flow plots"),
      "m09_transformer"),
    S("m10", "Tokenization and embeddings", ("BPE merge heuristics", "unigram", "cosine similarity", "isotropy"),
      ("trainer for BPE and unigram", "cosine similarities of random embedding pairs"), "m10_tokenizers"),
    S("m11", "Scaling laws", ("compute vs parameters vs data", "power-law loss surfaces", "gradient noise scale"),
      ("Kaplan et al.'s plots on a model zoo", "fitted scaling exponents (alpha, beta, gamma)"), "m11_scaling"),
    S("m12", "Large-batch and mixed-precision training", ("ZeRO (stage 3)", "activation checkpointing", "BF16",
                                                          "large batches"),
      ("pretraining with bf16 ZeRO-3", "tokens/s logged"), "m12_pretraining"),
    S("m13", "RL from human feedback", ("policy gradients", "reward models", "KL-regularized PPO"),
      ("a toy chatbot fine-tuned with PPO", "KL divergence and reward per epoch (KL tracker)"), "m13_rlhf"),
    S("m14", "Evaluation and safety math", ("perplexity vs accuracy", "MMLU", "differential privacy"),
      ("an eval-harness runner over an MMLU subset", "a DP noise-budget estimator"), "m14_evaluation"),
    S("m15", "Advanced representation theory", ("neural tangent kernel", "random-matrix spectra",
                                                "lottery tickets"),
      ("NTK spectrum of a one-layer transformer", "lottery-ticket pruning to 20% and retraining"),
      "m15_representation"),
    S("m16", "Retrieval augmentation and vector search", ("FAISS", "HNSW", "negative sampling"),
      ("a RAG pipeline over 100k Wikipedia passages", "recall@5 vs latency"), "m16_retrieval"),
    S("m17", "LLM engineering pipeline", ("ingestion", "sharding", "distributed data parallel"),
      ("pretraining that streams a Common Crawl shard", "experiment logging"), "m17_pipeline"),
    S("m18", "Inference optimization and quantization", ("INT8", "GPTQ", "speculative decoding"),
      ("a quantized model served (vLLM or the builtin engine)", "tokens/s and p95 latency benchmark",
       "a speculative-decoding wrapper"), "m18_inference"),
    S("m19", "Monitoring, logging and observability", ("perplexity drift", "latency SLO violations"),
      ("a Prometheus exporter of inference metrics", "a dashboard of tokens/s and p95 latency"), "m19_monitoring"),
    S("m20", "Responsible AI and governance", ("bias metrics", "model cards", "licenses"),
      ("a generated model card", "bias detection with StereoSet and a toxicity classifier"), "m20_responsible"),
)
del S
BY_ID = {s.id: s for s in SYLLABUS}
LAB_PATTERN = r"^m(0[1-9]|1[0-9]|20)$"  # a lab id (the LabSubmission CRD and the grading service check it)


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
                    deliverable=list(s.deliverable), component=s.component, built=is_built(s.id)) for s in SYLLABUS]


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
    record = plain(record)  # numpy scalars and arrays -> JSON types
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    (out_dir / "report.md").write_text(f"# {lab.id}: {_entry(lab.id).title} ({profile} profile)\n\n{report.strip()}\n")
    return record

