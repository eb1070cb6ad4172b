"""Model cards (Mitchell et al. 2019) written with huggingface_hub's ModelCard and ModelCardData: the model's
architecture and tokenizer, its training data with their licenses and what they oblige, its compute, its
evaluation results as ``model-index`` metadata (the Hub's format for results), intended use and limitations;
and an offline validation (the Hub's own ``validate`` needs the network)."""

from __future__ import annotations

from dataclasses import dataclass, field

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from llmlab.governance import licenses

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
| | |
|---|---|
{% for k, v in compute.items() %}| {{ k }} | {{ v }} |
{% endfor %}
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
    results: list[EvalResult] = field(default_factory=list)
    intended_use: str = "Teaching and research on small language models. Not for deployment to users."
    limitations: str = ""
    tags: list[str] = field(default_factory=lambda: ["llmlab", "text-generation"])


def build(inputs: CardInputs) -> ModelCard:
    terms = {name: licenses.classify(text) for name, text in inputs.datasets.items()}
    combined = licenses.combined(list(terms.values()))
    note = ("Its training data carry share-alike terms; whether trained weights are an adaptation of their data is "
            "unsettled, so the model is offered under the same terms." if combined["share_alike"] else "")
    if combined["non_commercial"] or combined["unknown_terms"]:
        note += " Some data come under non-commercial or custom terms (see the table): read them before any use."
    data = ModelCardData(model_name=inputs.model_name, license=combined["license"], library_name="llmlab",
                         tags=inputs.tags, datasets=list(inputs.datasets), eval_results=inputs.results or None,
                         pipeline_tag="text-generation")
    rows = [{"name": name, "license": t.text, "obligations": "; ".join(t.obligations) or "none"}
            for name, t in terms.items()]
    return ModelCard.from_template(data, template_str=TEMPLATE, model_name=inputs.model_name, summary=inputs.summary,
                                   architecture=inputs.architecture, tokenizer=inputs.tokenizer, data=rows,
                                   license=combined["license"], license_note=note.strip(), compute=inputs.compute,
                                   results=inputs.results, intended_use=inputs.intended_use,
                                   limitations=inputs.limitations or "Not stated.")


def validate(card: ModelCard | str) -> list[str]:
    """Offline checks, the problems found (empty when valid): the metadata parses, names the model, a
    license, its data sets and a model-index whose results parse back; every section is present and filled."""
    text = str(card)
    problems = []
    try:
        parsed = ModelCard(text)
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        return [f"the card does not parse: {e}"]
    d = parsed.data
    for key in ("model_name", "license", "datasets"):
        if not getattr(d, key, None):
            problems.append(f"metadata: no {key}")
    if not d.eval_results:
        problems.append("metadata: no model-index results")
    elif any(r.metric_value is None or not r.dataset_name for r in d.eval_results):
        problems.append("metadata: a result without a value or a data set")
    body = parsed.text
    for section in REQUIRED_SECTIONS:
        start = body.find(section)
        if start < 0:
            problems.append(f"missing section {section!r}")
            continue
        nxt = body.find("\n## ", start + len(section))
        if not body[start + len(section):nxt if nxt > 0 else None].strip():
            problems.append(f"empty section {section!r}")
    return problems
