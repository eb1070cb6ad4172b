"""Evaluation and safety math (lab m14): ``llmlab dp``, the differential-privacy budget of DP-SGD."""

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
