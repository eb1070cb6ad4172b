"""Model cards (Mitchell et al. 2019) written with huggingface_hub's ModelCard and ModelCardData: the model's
architecture and tokenizer, its training data with their licenses and what they oblige, its compute, its
evaluation results as ``model-index`` metadata (the Hub's format for results), intended use and limitations;
and an offline validation (the Hub's own ``validate`` needs the network)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmlab.governance import licenses

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## Model details
| | |
|---|---|
{% for k, v in architecture.items() %}| {{ k }} | {{ v }} |
{% endfor %}
Tokenizer: {{ tokenizer }}.

## Training data
| data set | license | obligations |
|---|---|---|
{% for d in data %}| {{ d.name }} | {{ d.license }} | {{ d.obligations }} |
{% endfor %}
License of this model: **{{ license }}**. {{ license_note }}

## Compute
{% if compute %}| | |
|---|---|
{% for k, v in compute.items() %}| {{ k }} | {{ v }} |
{% endfor %}{% else %}Not recorded: no run metadata (summary.json) next to the model.
{% endif %}
## Evaluation
| task | data set | metric | value |
|---|---|---|---|
{% for r in results -%}
| {{ r.task_name or r.task_type }} | {{ r.dataset_name }} | {{ r.metric_name or r.metric_type }} \
| {{ "%.4g" % r.metric_value }} |
{% endfor %}
## Intended use
{{ intended_use }}

## Limitations and risks
{{ limitations }}
"""

REQUIRED_SECTIONS = ("## Model details", "## Training data", "## Compute", "## Evaluation", "## Intended use",
                     "## Limitations and risks")


@dataclass
class CardInputs:
    model_name: str
    summary: str
    architecture: dict
    tokenizer: str
    datasets: dict[str, str]  # name -> license text (the data manifest's)
    compute: dict
    results: list = field(default_factory=list)  # huggingface_hub EvalResult entries
    intended_use: str = "Teaching and research on small language models. Not for deployment to users."
    limitations: str = ""
    tags: list[str] = field(default_factory=lambda: ["llmlab", "text-generation"])


def build(inputs: CardInputs) -> ModelCard:
    from huggingface_hub import ModelCard, ModelCardData

    terms = {name: licenses.classify(text) for name, text in inputs.datasets.items()}
    combined = licenses.combined(list(terms.values()))
    note = ("Its training data carry share-alike terms; whether trained weights are an adaptation of their data is "
            "unsettled, so the model is offered under the same terms." if combined["share_alike"] else "")
    if combined["conflict"]:
        families = ", ".join(combined["share_alike_families"])
        note += (f" Its data carry share-alike licenses of different families ({families}): no one license "
                 "satisfies both, so no outbound license is chosen here.")
    if combined["non_commercial"] or combined["unknown_terms"]:
        note += " Some data come under non-commercial or custom terms (see the table): read them before any use."
    other = combined["license"] == "other"  # the Hub asks a name and a link for a license of its own
    data = ModelCardData(model_name=inputs.model_name, license=combined["license"], library_name="llmlab",
                         license_name="llmlab-training-data-terms" if other else None,
                         license_link="README.md#training-data" if other else None,
                         tags=inputs.tags, datasets=list(inputs.datasets), eval_results=inputs.results or None,
                         pipeline_tag="text-generation")
    rows = [{"name": name, "license": t.text, "obligations": "; ".join(t.obligations) or "none"}
            for name, t in terms.items()]
    return ModelCard.from_template(data, template_str=TEMPLATE, model_name=inputs.model_name, summary=inputs.summary,
                                   architecture=inputs.architecture, tokenizer=inputs.tokenizer, data=rows,
                                   license=combined["license"], license_note=note.strip(), compute=inputs.compute,
                                   results=inputs.results, intended_use=inputs.intended_use,
                                   limitations=inputs.limitations or "Not stated.")


def split(text: str) -> tuple[dict | None, str]:
    """(the YAML metadata block, between a first line ``---`` and the next ``---`` line, as a mapping, or None
    when there is none or it is not a YAML mapping; the body after it)."""
    import yaml

    lines = text.splitlines()
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None) \
        if lines and lines[0].strip() == "---" else None
    if end is None:
        return None, text
    body = "\n".join(lines[end + 1:])
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return None, body
    return (meta if isinstance(meta, dict) else None), body


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate(card: ModelCard | str) -> list[str]:
    """The problems of a card, as a sorted list of codes ([] when valid). Offline, the Hub's rules for the
    metadata and this course's for the body:

    - ``unparseable``: the text does not start with a line ``---`` followed later by another ``---`` line
      with a YAML mapping between them (then nothing else is checked);
    - ``metadata:license``: no (or an empty) ``license``; ``metadata:license_name``: ``license: other``
      without both a ``license_name`` and a ``license_link``;
    - ``metadata:datasets``: ``datasets`` missing or not a non-empty list of non-empty strings;
    - ``model-index:missing``: ``model-index`` is not a non-empty list of mappings that each have a ``name``
      and a non-empty ``results`` list; else ``model-index:result`` when any result lacks a mapping ``task``
      with a ``type``, a mapping ``dataset`` with a ``name`` and a ``type``, or a non-empty ``metrics`` list
      of mappings each with a ``type`` and a ``value`` that is a finite int or float (not a bool);
    - after the closing ``---``, for each required heading ("## Model details", "## Training data",
      "## Compute", "## Evaluation", "## Intended use", "## Limitations and risks"): ``section:<heading>``
      when no line is exactly the heading (trailing whitespace aside); else ``empty:<heading>`` when only
      whitespace lies between its first such line and the next line that starts with ``## `` (or the end)."""
    text = str(card)
    meta, body = split(text)
    if meta is None:
        return ["unparseable"]
    problems = set()
    if not meta.get("license"):
        problems.add("metadata:license")
    elif meta["license"] == "other" and not (meta.get("license_name") and meta.get("license_link")):
        problems.add("metadata:license_name")
    ds = meta.get("datasets")
    if not (isinstance(ds, list) and ds and all(isinstance(d, str) and d for d in ds)):
        problems.add("metadata:datasets")
    index = meta.get("model-index")
    if not (isinstance(index, list) and index and all(isinstance(m, dict) and m.get("name") and
                                                      isinstance(m.get("results"), list) and m["results"]
                                                      for m in index)):
        problems.add("model-index:missing")
    else:
        for r in (r for m in index for r in m["results"]):
            ok = isinstance(r, dict) and isinstance(r.get("task"), dict) and r["task"].get("type") and \
                isinstance(r.get("dataset"), dict) and r["dataset"].get("name") and r["dataset"].get("type") and \
                isinstance(r.get("metrics"), list) and r["metrics"] and \
                all(isinstance(x, dict) and x.get("type") and _number(x.get("value")) for x in r["metrics"])
            if not ok:
                problems.add("model-index:result")
    lines = body.splitlines()
    for section in REQUIRED_SECTIONS:
        at = [i for i, line in enumerate(lines) if line.rstrip() == section]
        if not at:
            problems.add(f"section:{section}")
            continue
        rest = lines[at[0] + 1:]
        stop = next((i for i, line in enumerate(rest) if line.startswith("## ")), len(rest))
        if not "".join(rest[:stop]).strip():
            problems.add(f"empty:{section}")
    return sorted(problems)


# --- a card from a training run ----------------------------------------------------------------------------
def model_folder(run_dir) -> Path:
    """The model of a run folder (``llmlab pretrain``'s: ``model/`` next to ``summary.json``) or the folder
    itself when it is a model (config.json)."""
    run = Path(run_dir)
    for folder in (run / "model", run):
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"{run} holds no model: no config.json in it or in {run / 'model'}")


def training_data(sources: list[str]) -> dict[str, str]:
    """Data-set name -> license text (the data manifest's) for a run's data sources; a source outside the
    manifest keeps its own name with an unknown license."""
    from llmlab.data import catalog

    out = {}
    for src in sources:
        name = catalog.set_of(src) or ("commoncrawl" if "commoncrawl" in src else None)
        if name:
            out[name] = catalog.get(name).license
        else:
            out[Path(src).name] = "unknown: not in the data manifest"
    return out


def _tokenizer(folder: Path, config: dict) -> str:
    from llmlab.tokenization import model_tokenizer

    tok = model_tokenizer(folder)
    return f"{type(tok).__name__} with {config.get('vocab_size')} tokens (files in the model folder)"


def from_run(run_dir, evals: dict | None = None, name: str | None = None) -> CardInputs:
    """A card's inputs from the run's real metadata: config.json (architecture), the tokenizer files, the
    run's summary.json (data sources, parameters, FLOPs per token, tokens, hardware, time) and ``evals``
    (``audit.evaluate``'s results)."""
    from llmlab.governance import audit

    folder = model_folder(run_dir)
    config = json.loads((folder / "config.json").read_text())
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    own = config.get("llmlab", {}).get("config", {})
    architecture = {"architecture": ", ".join(config.get("architectures", ["?"])),
                    "layers": config.get("num_hidden_layers", own.get("n_layers")),
                    "d_model": config.get("hidden_size", own.get("d_model")),
                    "heads": config.get("num_attention_heads", own.get("n_heads")),
                    "context": config.get("max_position_embeddings", own.get("context")),
                    "vocabulary": config.get("vocab_size")}
    compute = {}
    if summary:
        hist, hw, cfg = summary.get("history") or [{}], summary.get("hardware", {}), summary.get("config", {})
        tokens = hist[-1].get("tokens", 0)
        compute = {"parameters": f"{summary['params']:,}", "training tokens": f"{tokens:,}",
                   "FLOPs per token (6N + attention)": f"{summary['flops_per_token']:.3g}",
                   "training FLOPs": f"{summary['flops_per_token'] * tokens:.3g}",
                   "hardware": f"{summary.get('world_size', '?')} workers x {hw.get('cpus_per_worker', '?')} CPU"
                               + (f" + {hw['gpus_per_worker']} GPU ({hw.get('gpu')})" if hw.get("gpus_per_worker")
                                  else "") + (f"; {hw['cpu']}" if hw.get("cpu") else ""),
                   "training time": f"{summary.get('seconds', {}).get('train', float('nan')):.0f} s",
                   "engine": f"{cfg.get('engine', '?')} on Ray Train, {cfg.get('steps', '?')} steps",
                   "final validation loss": f"{hist[-1].get('val_loss', float('nan')):.3f} nats/token"}
    data = training_data(summary.get("data_sources", []))
    params = summary.get("params")
    what = f"A {params / 1e6:.2f}M-parameter " if params else "A "
    return CardInputs(model_name=name or Path(run_dir).resolve().name,
                      summary=what + "Llama-style causal language model trained by llmlab on "
                      + (", ".join(data) or "undocumented data") + ".",
                      architecture=architecture, tokenizer=_tokenizer(folder, config), datasets=data, compute=compute,
                      results=audit.eval_results(evals) if evals else [],
                      limitations=audit.limitations(evals) if evals else "")


def write(run_dir, evals: dict | None = None, name: str | None = None) -> tuple[Path, list[str]]:
    """Build the card of a run, write it as the model folder's README.md (the Hub's place for it), and
    return its path and its validation problems."""
    built = build(from_run(run_dir, evals, name))
    path = model_folder(run_dir) / "README.md"
    built.save(path)
    return path, validate(built)
