"""Evaluation and safety math (lab m14): ``llmlab eval mmlu``, the harness, and ``llmlab dp``, the
differential-privacy budget of DP-SGD."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from llmlab.cli import Fail, app, out

dp = typer.Typer(help="Differential privacy: the (epsilon, delta) of DP-SGD and the noise a budget allows.",
                 no_args_is_help=True)
app.add_typer(dp, name="dp")

SampleRate = Annotated[float, typer.Option("--sample-rate", "-q", help="Poisson sampling rate (batch / dataset)")]
Steps = Annotated[int, typer.Option("--steps", "-T", help="number of noisy gradient steps")]
Delta = Annotated[float, typer.Option("--delta", "-d", help="delta, e.g. 1e-5 (below 1 / dataset size)")]
AsJson = Annotated[bool, typer.Option("--json")]


def _check(q: float, steps: int, delta: float) -> None:
    if not 0 < q <= 1 or steps < 1 or not 0 < delta < 1:
        raise Fail("need 0 < --sample-rate <= 1, --steps >= 1 and 0 < --delta < 1", 2)


@dp.command("epsilon")
def epsilon_cmd(noise: Annotated[float, typer.Option("--noise", "-s", help="noise multiplier (std / clip norm)")],
                sample_rate: SampleRate, steps: Steps, delta: Delta = 1e-5, as_json: AsJson = False):
    """Epsilon of DP-SGD (the subsampled Gaussian mechanism, RDP accountant) for a noise multiplier."""
    from llmlab.privacy import accountant

    _check(sample_rate, steps, delta)
    if noise <= 0:
        raise Fail("--noise must be positive", 2)
    eps, order = accountant.epsilon(noise, sample_rate, steps, delta)
    if as_json:
        out.print_json(json.dumps({"epsilon": eps, "order": order, "noise": noise, "sample_rate": sample_rate,
                                   "steps": steps, "delta": delta}))
    else:
        out.print(f"epsilon = {eps:.4g} at delta = {delta:g} (best RDP order {order:g}) for noise {noise:g}, "
                  f"sampling rate {sample_rate:g}, {steps:,} steps")


@dp.command("noise")
def noise_cmd(epsilon: Annotated[float, typer.Option("--epsilon", "-e", help="the privacy budget")],
              sample_rate: SampleRate, steps: Steps, delta: Delta = 1e-5, as_json: AsJson = False):
    """The smallest noise multiplier whose DP-SGD epsilon is within the budget."""
    from llmlab.privacy import accountant

    _check(sample_rate, steps, delta)
    try:
        sigma = accountant.noise_for_epsilon(epsilon, sample_rate, steps, delta)
    except ValueError as e:
        raise Fail(str(e), 2) from None
    if as_json:
        out.print_json(json.dumps({"noise": sigma, "epsilon": epsilon, "sample_rate": sample_rate, "steps": steps,
                                   "delta": delta}))
    else:
        out.print(f"noise multiplier {sigma:.4g} gives epsilon <= {epsilon:g} at delta = {delta:g} "
                  f"(sampling rate {sample_rate:g}, {steps:,} steps)")


@dp.command("gaussian")
def gaussian_cmd(epsilon: Annotated[float, typer.Option("--epsilon", "-e")], delta: Delta = 1e-5,
                 sensitivity: Annotated[float, typer.Option(help="L2 sensitivity of the query")] = 1.0):
    """The analytic Gaussian mechanism's sigma for (epsilon, delta) (Balle and Wang 2018), next to the
    classical calibration's."""
    from llmlab.privacy import gaussian

    try:
        sigma = gaussian.calibrate(epsilon, delta, sensitivity)
    except ValueError as e:
        raise Fail(str(e), 2) from None
    classical = gaussian.classical_sigma(epsilon, delta, sensitivity)
    out.print(f"sigma = {sigma:.5g} (analytic); the classical sqrt(2 log(1.25/delta)) / epsilon gives "
              f"{classical:.5g}" + ("" if epsilon < 1 else ", but holds only for epsilon < 1"))


evals = typer.Typer(help="Evaluation harnesses: MMLU as lm-evaluation-harness scores it.", no_args_is_help=True)
app.add_typer(evals, name="eval")


@evals.command("mmlu")
def mmlu_cmd(model: Annotated[str | None, typer.Option("--model", "-m", help="a model folder, or the served "
                                                       "model's name with --base-url")] = None,
             subjects: Annotated[str | None, typer.Option(help="comma-separated subjects (default: all 57)")] = None,
             num_fewshot: Annotated[int, typer.Option("--num-fewshot", "-k", help="solved dev examples, 0-5")] = 0,
             backend: Annotated[str, typer.Option(help="llmlab (llmlab's implementation) or hf (transformers)")]
             = "llmlab",
             base_url: Annotated[str | None, typer.Option(help="an OpenAI-compatible server, e.g. "
                                                          "http://127.0.0.1:8000/v1 (echo + logprobs)")] = None,
             api_key: Annotated[str, typer.Option(envvar="OPENAI_API_KEY")] = "EMPTY",
             limit: Annotated[int | None, typer.Option(help="the first N questions of each subject")] = None,
             batch_size: Annotated[int, typer.Option(min=1)] = 16,
             out_dir: Annotated[str | None, typer.Option("--out", help="write results.json, table.md, mmlu.png")]
             = None,
             list_subjects: Annotated[bool, typer.Option("--list", help="list the subjects and exit")] = False,
             as_json: AsJson = False):
    """MMLU with lm-evaluation-harness's prompt and scoring (log-likelihood of " A".." D")."""
    from pathlib import Path

    from llmlab.evals import mmlu  # harness (torch) only once the arguments are good

    if list_subjects:
        for s, c in mmlu.SUBJECTS.items():
            out.print(f"{s}\t{c}")
        return
    if not model:
        raise Fail("--model is required (a model folder, or the served model's name with --base-url)", 2)
    chosen = [s.strip() for s in subjects.split(",") if s.strip()] if subjects else None
    unknown = sorted(set(chosen or []) - set(mmlu.SUBJECTS))
    if unknown:
        raise Fail(f"unknown subjects: {', '.join(unknown)} (see `llmlab eval mmlu --list`)", 2)
    if not 0 <= num_fewshot <= 5:
        raise Fail("--num-fewshot must be 0-5 (the dev split has 5 examples per subject)", 2)
    if not base_url and not (Path(model) / "config.json").exists():
        raise Fail(f"{model}: not a model folder (no config.json); for a server pass --base-url", 2)
    from llmlab.evals import harness

    if base_url:
        lm = harness.CompletionsLM(base_url, model, api_key)
    else:
        try:
            lm = harness.from_folder(model, backend, batch_size=batch_size)
        except ValueError as e:
            raise Fail(str(e), 2) from None
    result = mmlu.evaluate(lm.loglikelihood, chosen, num_fewshot, limit)
    summary = {k: result[k] for k in ("num_fewshot", "mmlu", "categories", "subjects")} | {"model": model}
    if out_dir:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(result | {"model": model}, indent=1))
        (folder / "table.md").write_text(mmlu.table(result))
        mmlu.plot(result, folder / "mmlu.png", f"MMLU of {Path(model).name}")
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(mmlu.table(result))


@app.command("card")
def card_cmd(run_dir: Annotated[str, typer.Argument(help="a training run folder (`llmlab pretrain --out`: "
                                                    "summary.json and model/) or a model folder")],
             audit: Annotated[str, typer.Option(help="evaluations to run when the run has no evals.json: quick, "
                                                "full or none")] = "quick",
             evals_file: Annotated[str | None, typer.Option("--evals", help="an evals.json to use "
                                                            "(default: RUN_DIR/evals.json when present)")] = None,
             name: Annotated[str | None, typer.Option(help="the model's name (default: the folder's)")] = None,
             as_json: AsJson = False):
    """Write the model card (model/README.md) of a trained model from its run's metadata and evaluations
    (perplexity, MMLU, StereoSet, CrowS-Pairs, toxicity), with its data's licenses; validate it. Exits 1
    when the card has problems."""
    from pathlib import Path

    from llmlab.governance import audit as audits
    from llmlab.governance import card

    if audit not in ("quick", "full", "none"):
        raise Fail("--audit must be quick, full or none", 2)
    run = Path(run_dir)
    try:
        folder = card.model_folder(run)
    except FileNotFoundError as e:
        raise Fail(str(e), 2) from None
    path = Path(evals_file) if evals_file else run / "evals.json"
    if evals_file and not path.is_file():
        raise Fail(f"{path}: no such evals file", 2)
    if path.is_file():
        try:
            evals = json.loads(path.read_text())
            audits.headline(evals)
        except (ValueError, KeyError, TypeError) as e:
            raise Fail(f"{path}: not an evals file of `llmlab card` ({type(e).__name__}: {e})", 2) from None
    elif audit != "none":
        evals = audits.evaluate(folder, audits.FULL if audit == "full" else audits.QUICK)
        audits.write(evals, run / "evals.json")
    else:
        evals = None
    written, problems = card.write(run, evals, name)
    meta, _ = card.split(written.read_text())
    if as_json:
        out.print_json(json.dumps({"card": str(written), "license": meta.get("license"), "problems": problems,
                                   "headline": audits.headline(evals) if evals else None}))
    elif not problems:
        out.print(f"wrote {written} (license {meta.get('license')}): valid")
    if problems:
        raise Fail(f"the card at {written} has problems: {', '.join(problems)}", 1)
