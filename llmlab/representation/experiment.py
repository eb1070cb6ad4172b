"""Lab m15's deliverable: the empirical NTK of a one-layer transformer (two computations that agree, its
spectrum at initialization and after training, how far it moves as the width grows), random-matrix spectra
(Wigner's semicircle, Marchenko-Pastur at initialization, heavy tails after training), and lottery tickets
(iterative magnitude pruning to 20% of the weights with rewinding, against random re-initialization and
random pruning) on CIFAR-tiny."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llmlab.plots import figure
from llmlab.representation import lottery, ntk, rmt


@dataclass(frozen=True)
class RepresentationConfig:
    widths: tuple[int, ...] = (16, 32, 64, 128)
    context: int = 32  # characters per sequence
    kernel_points: int = 64  # sequences the kernel is computed on (held out)
    ntk_steps: int = 300
    ntk_batch: int = 64
    spectrum_width: int = 128
    wigner_n: int = 1000
    lottery_epochs: int = 2
    lottery_rate: float = 0.2  # of each layer's surviving weights per round (the output layer at half of it)
    lottery_target: float = 0.2  # prune until at most this fraction of the weights remains
    rewind_iteration: int = 40  # the early iterate of "rewinding" (Frankle et al. 2020)
    train_images: int | None = None  # all 5,000
    seed: int = 0


QUICK = RepresentationConfig()
# full: 27 min on 2 CPU cores (width 1024's 2,000 steps about 20 of them; its kernel's Jacobians peak at 15 GB)
FULL = RepresentationConfig(widths=(16, 32, 64, 128, 256, 512, 1024), kernel_points=128, ntk_steps=2000,
                            spectrum_width=512, wigner_n=3000, lottery_epochs=20, rewind_iteration=200)


# --- the NTK -------------------------------------------------------------------------------------------------
def sequences(cfg: RepresentationConfig):
    """(vocabulary size, train (ids, targets), held-out (ids, targets)): windows of Tiny Shakespeare (target +1)
    and of TinyStories (target -1), characters as ids."""
    from llmlab.data import resolve, shakespeare

    texts = [shakespeare.load_text(), resolve("tinystories/tinystories_train_head.txt").read_text(encoding="utf-8")]
    chars = sorted(set("".join(texts)))
    stoi = {c: i for i, c in enumerate(chars)}
    rng = np.random.default_rng(cfg.seed)
    n_train = cfg.ntk_batch * 50
    ids, ys = [], []
    for label, text in zip((1.0, -1.0), texts, strict=True):
        starts = rng.integers(0, len(text) - cfg.context, n_train + cfg.kernel_points)
        ids += [[stoi[c] for c in text[s:s + cfg.context]] for s in starts]
        ys += [label] * len(starts)
    ids, ys = torch.tensor(ids), torch.tensor(ys, dtype=torch.float32)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(cfg.seed))
    ids, ys = ids[order], ys[order]
    k = cfg.kernel_points
    return len(chars), (ids[k:], ys[k:]), (ids[:k], ys[:k])


def train_mse(model, train, steps: int, batch: int, lr: float, seed: int) -> list[float]:
    """Plain SGD on ½ mean squared error: the dynamics the NTK describes."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(train[0]), (batch,), generator=gen)
        loss = 0.5 * ((model(train[0][idx]) - train[1][idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def ntk_study(cfg: RepresentationConfig) -> dict:
    vocab, train, held = sequences(cfg)
    x, y = held
    # the two computations, float64, a small width
    small = ntk.OneLayerTransformer(vocab, 32, context=cfg.context, seed=cfg.seed).double()
    f, params = ntk.functional(small)
    a, b = ntk.ntk_jacobian(f, params, x[:16], x[:16]), ntk.ntk_vector_products(f, params, x[:16], x[:16])
    agreement = float((a - b).abs().max() / a.abs().max())
    rows, spectra = [], {}
    for width in tqdm(cfg.widths, desc="NTK widths", leave=False):
        model = ntk.OneLayerTransformer(vocab, width, context=cfg.context, seed=cfg.seed)
        k0 = ntk.kernel(model, x)
        lam0 = ntk.spectrum(k0)
        lr = 1.0 / float(lam0[0] / len(x))  # stable for gradient descent on the kernel's quadratic (< 2 / λmax)
        losses = train_mse(model, train, cfg.ntk_steps, cfg.ntk_batch, lr, cfg.seed)
        k1 = ntk.kernel(model, x)
        with torch.no_grad():
            acc = float(((model(x) > 0).float() * 2 - 1 == y).float().mean())
        rows.append({"width": width, "parameters": sum(p.numel() for p in model.parameters()), "lr": lr,
                     "kernel_change": ntk.relative_change(k0, k1), "first_loss": float(np.mean(losses[:10])),
                     "last_loss": float(np.mean(losses[-20:])), "held_out_accuracy": acc,
                     "trace_per_point": float(k0.trace() / len(x))})
        if width == cfg.spectrum_width:
            spectra = {"width": width, "init": lam0.tolist(), "trained": ntk.spectrum(k1).tolist()}
    w = np.array([r["width"] for r in rows], dtype=float)
    c = np.array([r["kernel_change"] for r in rows])
    slope = float(np.polyfit(np.log(w), np.log(c), 1)[0])
    return {"vocab": vocab, "agreement_rel": agreement, "widths": rows, "change_slope": slope,
            "spectrum": spectra}


# --- random matrices -----------------------------------------------------------------------------------------
def spectra_study(cfg: RepresentationConfig, w_init: np.ndarray, w_trained: np.ndarray) -> dict:
    rng = np.random.default_rng(cfg.seed)
    goe = np.linalg.eigvalsh(rmt.goe(cfg.wigner_n, rng))
    out = {"wigner": {"n": cfg.wigner_n, "ks": rmt.ks_distance(goe, rmt.wigner_cdf), "eigs": goe.tolist()}}
    for name, w in (("init", w_init), ("trained", w_trained)):
        eigs = rmt.esd(w)
        q = min(w.shape) / max(w.shape)
        sigma2 = float(np.mean(w ** 2))  # the entries' variance (the bulk's scale)
        lo, hi = rmt.mp_edges(q, sigma2)
        fit = rmt.fit_power_law(eigs)
        out[name] = {"shape": list(w.shape), "q": q, "sigma2": sigma2, "lambda_plus": hi,
                     "ks_mp": rmt.ks_distance(eigs, lambda t, q=q, s=sigma2: rmt.marchenko_pastur_cdf(t, q, s)),
                     "outliers": int((eigs > hi * 1.05).sum()), "max_over_edge": float(eigs[-1] / hi),
                     "alpha": fit["alpha"], "alpha_tail": fit["tail"], "alpha_ks": fit["ks"], "eigs": eigs.tolist()}
    return out


# --- lottery tickets -----------------------------------------------------------------------------------------
def lottery_study(cfg: RepresentationConfig) -> dict:
    data = lottery.cifar(cfg.train_images, cfg.seed)
    model = lottery.MLP(seed=cfg.seed)
    names = lottery.prunable(model)
    rates = {n: cfg.lottery_rate / 2 if n == names[-1] else cfg.lottery_rate for n in names}
    w0 = lottery.state(model)
    dense = lottery.train(model, lottery.full_masks(model), data, cfg.lottery_epochs, seed=cfg.seed,
                          keep_at=cfg.rewind_iteration)
    trained = {"init": lottery.state(model), "rewind": lottery.state(model)}
    w_early = dense["kept"]
    masks = {"init": lottery.full_masks(model), "rewind": lottery.full_masks(model)}
    curves = {k: [(1.0, dense["accuracy"])] for k in ("IMP, rewound to init", f"IMP, rewound to iteration "
                                                      f"{cfg.rewind_iteration}", "IMP masks, random re-init",
                                                      "random pruning")}
    labels = list(curves)
    w_fc1_trained = trained["init"][names[0]].numpy().copy()
    r = 0
    bar = tqdm(desc="IMP rounds", leave=False)
    while lottery.remaining(masks["init"]) > cfg.lottery_target:
        r += 1
        for kind, start, label in (("init", w0, labels[0]), ("rewind", w_early, labels[1])):
            masks[kind] = lottery.prune_round(trained[kind], masks[kind], rates)
            m = lottery.MLP(seed=cfg.seed)
            lottery.load(m, lottery.rewind(start, masks[kind]))
            res = lottery.train(m, masks[kind], data, cfg.lottery_epochs, seed=cfg.seed + r)
            trained[kind] = lottery.state(m)
            curves[label].append((lottery.remaining(masks[kind]), res["accuracy"]))
        for label, (weights, mask) in ((labels[2], (lottery.state(lottery.MLP(seed=cfg.seed + 1000 + r)),
                                                    masks["init"])),
                                       (labels[3], (w0, lottery.random_masks(masks["init"], cfg.seed + r)))):
            m = lottery.MLP(seed=cfg.seed)
            lottery.load(m, lottery.rewind(weights, mask))
            res = lottery.train(m, mask, data, cfg.lottery_epochs, seed=cfg.seed + r)
            curves[label].append((lottery.remaining(mask), res["accuracy"]))
        bar.update()
    bar.close()
    return {"rounds": r, "epochs": cfg.lottery_epochs, "train_images": len(data["x_train"]),
            "rates": rates, "curves": {k: [list(p) for p in v] for k, v in curves.items()},
            "_w_fc1": (w0[names[0]].numpy(), w_fc1_trained)}


# --- plots and the run -------------------------------------------------------------------------------------
def plot_ntk(m: dict, path: Path) -> None:
    n = m["ntk"]
    with figure(path, "Empirical NTK of a one-layer transformer", ncols=2) as (a, b):
        sp = n["spectrum"]
        for key, style in (("init", "o-"), ("trained", "s-")):
            lam = np.array(sp[key])
            a.semilogy(np.arange(1, len(lam) + 1), np.clip(lam, 1e-12, None) / lam[0], style, ms=2,
                       label=f"{'at initialization' if key == 'init' else 'after training'}")
        a.set_xlabel("eigenvalue index")
        a.set_ylabel("λ_i / λ_1")
        a.set_title(f"spectrum, width {sp['width']}, {len(sp['init'])} sequences", fontsize=9)
        a.legend(fontsize=7)
        w = [r["width"] for r in n["widths"]]
        c = [r["kernel_change"] for r in n["widths"]]
        b.loglog(w, c, "o-", label=f"measured (slope {n['change_slope']:.2f})")
        b.loglog(w, c[0] * (np.array(w) / w[0]) ** -0.5, "k--", lw=1, label="∝ width^-1/2 (lazy regime)")
        b.set_xlabel("width (d_model)")
        b.set_ylabel("‖Θ_T − Θ_0‖ / ‖Θ_0‖")
        b.set_title(f"kernel movement after {m['config']['ntk_steps']} SGD steps", fontsize=9)
        b.legend(fontsize=7)


def plot_spectra(m: dict, path: Path) -> None:
    s = m["spectra"]
    with figure(path, "Random-matrix spectra", ncols=3) as (a, b, c):
        eigs = np.array(s["wigner"]["eigs"])
        a.hist(eigs, bins=60, density=True, alpha=0.5)
        xs = np.linspace(-2.2, 2.2, 400)
        a.plot(xs, rmt.wigner_pdf(xs), "k", lw=1)
        a.set_title(f"GOE {s['wigner']['n']}x{s['wigner']['n']}: semicircle (KS {s['wigner']['ks']:.3f})", fontsize=8)
        for ax, key in ((b, "init"), (c, "trained")):
            r = s[key]
            eigs = np.array(r["eigs"])
            ax.hist(eigs, bins=80, density=True, alpha=0.5, label="ESD")
            xs = np.linspace(0, r["lambda_plus"] * 1.2, 400)
            ax.plot(xs, rmt.marchenko_pastur_pdf(xs, r["q"], r["sigma2"]), "k", lw=1, label="Marchenko-Pastur")
            ax.set_yscale("log")
            ax.set_xlabel("eigenvalue of WᵀW / n")
            ax.set_title(f"LeNet fc1 {'at init' if key == 'init' else 'trained'}: KS {r['ks_mp']:.3f}, "
                         f"{r['outliers']} above λ+, α {r['alpha']:.1f}", fontsize=8)
            ax.legend(fontsize=6)


def plot_lottery(m: dict, path: Path) -> None:
    lt = m["lottery"]
    with figure(path, f"Lottery tickets: LeNet-300-100 on CIFAR-tiny ({lt['epochs']} epochs per training)") as ax:
        for label, pts in lt["curves"].items():
            pts = np.array(pts)
            ax.plot(100 * pts[:, 0], pts[:, 1], "o-", ms=3, label=label)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("test accuracy (10,000 images)")
        ax.legend(fontsize=7)


def run(cfg: RepresentationConfig, out: Path) -> tuple[dict, str]:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    n = ntk_study(cfg)
    lt = lottery_study(cfg)
    w_init, w_trained = lt.pop("_w_fc1")
    sp = spectra_study(cfg, w_init, w_trained)
    m = {"config": asdict(cfg), "ntk": n, "spectra": sp, "lottery": lt}
    plot_ntk(m, out / "ntk.png")
    plot_spectra(m, out / "spectra.png")
    plot_lottery(m, out / "lottery.png")
    m["seconds"] = time.perf_counter() - t0
    return m, report(m)


def report(m: dict) -> str:
    n, sp, lt, cfg = m["ntk"], m["spectra"], m["lottery"], m["config"]
    widths = "\n".join(f"| {r['width']} | {r['parameters']:,} | {r['trace_per_point']:.1f} | {r['lr']:.2e} | "
                       f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} | {r['held_out_accuracy']:.3f} | "
                       f"{r['kernel_change']:.4f} |" for r in n["widths"])
    lam0, lam1 = np.array(n["spectrum"]["init"]), np.array(n["spectrum"]["trained"])

    def top(lam):  # the share of the trace in the largest eigenvalue, and the effective rank (Σλ)² / Σλ²
        return f"{lam[0] / lam.sum():.2f} of the trace in λ1, effective rank {lam.sum() ** 2 / (lam ** 2).sum():.1f}"

    mp = "\n".join(f"| {k} | {tuple(r['shape'])} | {r['q']:.3f} | {r['sigma2']:.2e} | {r['ks_mp']:.3f} | "
                   f"{r['outliers']} | {r['max_over_edge']:.2f} | {r['alpha']:.2f} ({r['alpha_tail']} eigenvalues) |"
                   for k, r in ((k, sp[k]) for k in ("init", "trained")))
    labels = list(lt["curves"])
    levels = [p[0] for p in lt["curves"][labels[0]]]
    lottery_rows = "\n".join(
        f"| {100 * lvl:.1f} | " + " | ".join(f"{lt['curves'][k][i][1]:.3f}" for k in labels) + " |"
        for i, lvl in enumerate(levels))
    last = {k: v[-1][1] for k, v in lt["curves"].items()}
    dense = lt["curves"][labels[0]][0][1]
    verdict = (f"At {100 * levels[-1]:.1f}% of the weights, IMP rewound to init reaches {last[labels[0]]:.3f} and "
               f"rewound to iteration {cfg['rewind_iteration']} {last[labels[1]]:.3f}, against {last[labels[2]]:.3f} "
               f"with random re-initialization and {last[labels[3]]:.3f} with random pruning; the dense network "
               f"reached {dense:.3f}.")
    return f"""
## The empirical neural tangent kernel of a one-layer transformer
A one-layer transformer (RoPE attention, SwiGLU MLP, RMSNorm, mean over positions, one output) reads
{cfg['context']}-character windows and regresses +1 for Tiny Shakespeare, -1 for TinyStories. Its NTK
Θ(x, x') = J(x)J(x')ᵀ over all parameters, on {cfg['kernel_points']} held-out windows, computed with torch.func
two ways: contracting per-example Jacobians (vmap of jacrev) and NTK-vector products (vjp then jvp, no Jacobian
held): they agree to a relative {n['agreement_rel']:.1e} (float64, width 32).

Each width trains {cfg['ntk_steps']} steps of plain SGD on the squared error (batches of {cfg['ntk_batch']}) at
learning rate 1 / λmax(Θ₀ / n), the kernel's own stable step, so every width moves its function alike:

| width | parameters | Θ₀ trace / n | lr | loss, first 10 -> last 20 steps | held-out accuracy | ‖Θ_T − Θ₀‖ / ‖Θ₀‖ |
|---|---|---|---|---|---|---|
{widths}

The kernel moves less as the network widens: a log-log slope of **{n['change_slope']:.2f}** against the lazy
regime's -1/2 (Jacot et al.; Lee et al. 2019), where the network trains as its linearization. Spectrum at width
{n['spectrum']['width']}: at initialization {top(lam0)}; after training {top(lam1)}.

## Random-matrix spectra
A {sp['wigner']['n']}x{sp['wigner']['n']} symmetric Gaussian matrix (GOE, scaled by 1/√(2n)): KS distance
**{sp['wigner']['ks']:.4f}** to Wigner's semicircle on [-2, 2].

LeNet-300-100's first layer (its 300 x 3,072 weights), whose eigenvalues of WᵀW / n set against the
Marchenko-Pastur law with q = p/n and the entries' variance σ²:

| weights | shape | q | σ² | KS to MP | eigenvalues above 1.05 λ+ | λmax / λ+ | power-law α of the tail |
|---|---|---|---|---|---|---|---|
{mp}

At initialization the spectrum is the Marchenko-Pastur bulk (i.i.d. Glorot weights). Training writes
structure into the weights: eigenvalues leave the bulk and the tail grows heavier (Martin & Mahoney's
heavy-tailed self-regularization reads a smaller α as stronger correlations; α between 2 and 4 is their
"moderately heavy-tailed" class).

## Lottery tickets
LeNet-300-100 (Frankle & Carbin's fully connected network) on CIFAR-tiny: {lt['train_images']:,} training and
10,000 test images, flattened. CIFAR rather than a Tiny Shakespeare LM because it is the setting of the original
experiments, a single number (accuracy) judges each ticket, and a fully connected network trains in seconds on
CPU. Adam at 1.2e-3, batches of 60, {lt['epochs']} epochs per training; each round prunes 20% of each layer's
surviving weights by magnitude (the output layer 10%, as Frankle & Carbin do), {lt['rounds']} rounds to
{100 * levels[-1]:.1f}% remaining. Test accuracy:

| weights remaining (%) | {' | '.join(labels)} |
|---|{'---|' * len(labels)}
{lottery_rows}

{verdict} "Rewound to init" is Frankle & Carbin's winning-ticket procedure; "rewound to iteration
{cfg['rewind_iteration']}" resets the survivors to an early iterate instead (Frankle et al. 2020); the controls keep
IMP's masks with freshly drawn weights, or prune at random to the same per-layer counts from the same
initialization. A ticket is "winning" where it matches the dense network's accuracy and beats both controls at
the same sparsity; with {lt['epochs']} epochs on 5,000 images every difference under about 0.01 (the standard
error of an accuracy near 0.45 over 10,000 test images is 0.005) is noise. A fully connected network on 5,000
CIFAR images overfits, so pruning can raise every curve above the dense network: read each ticket against the
controls at its own sparsity.
"""
