"""Optimizers written from their update rules (lab m04), as ``torch.optim.Optimizer`` subclasses.

SGD, Adam and AdamW follow PyTorch's documented algorithms (so they match ``torch.optim`` step for step);
Lion follows Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class SGD(Optimizer):
    """SGD with optional momentum (heavy ball), Nesterov momentum and L2 weight decay, as torch.optim.SGD:
    g <- g + wd p; b <- g (first step) or mu b + (1 - dampening) g; step along g + mu b (Nesterov) or b."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + group["weight_decay"] * p if group["weight_decay"] else p.grad.clone()
                if mu:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(g, alpha=1 - group["dampening"])
                    buf = state["momentum_buffer"]
                    g = g + mu * buf if group["nesterov"] else buf
                p.add_(g, alpha=-group["lr"])
        return loss


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and L2 weight decay added to the gradient, as torch.optim.Adam:
    m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; p <- p - lr * m_hat / (sqrt(v_hat) + eps)."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd and self.decoupled:
                    p.mul_(1 - lr * wd)
                elif wd:
                    g = g + wd * p
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-lr / (1 - b1**t))
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW: p <- p (1 - lr wd) before
    the Adam step, and the gradient itself is left alone."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class Lion(Optimizer):
    """Lion (Chen et al. 2023): c <- b1 m + (1-b1) g; p <- p - lr (sign(c) + wd p); m <- b2 m + (1-b2) g.
    The update is the sign of an interpolation of momentum and gradient; weight decay is decoupled."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (b1 * m + (1 - b1) * p.grad).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def gd_rate(kappa: float) -> float:
    """Per-step contraction of gradient descent with step 2/(L+mu) on a quadratic of condition number kappa."""
    return (kappa - 1) / (kappa + 1)


def heavy_ball_rate(kappa: float) -> float:
    """Per-step contraction of Polyak's heavy ball with optimal step and momentum on the same quadratic."""
    return (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)


# --- convergence experiments (lab m04's deliverable) ------------------------------------------------
def quadratic_rates(kappas, steps: int) -> dict:
    """GD with step 2/(L+mu) and heavy ball with optimal parameters on f = (L x^2 + mu y^2)/2, L = 1."""
    out = {"gd": [], "heavy_ball": []}
    for kappa in kappas:
        L, mu = 1.0, 1.0 / kappa
        h = torch.tensor([L, mu], dtype=torch.float64)
        x = torch.ones(2, dtype=torch.float64, requires_grad=True)
        opt = SGD([x], lr=2 / (L + mu))
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * (h * x * x).sum()).backward()
            opt.step()
        out["gd"].append(float(x.detach().norm() / math.sqrt(2)) ** (1 / steps))
        # heavy ball: lr = 4/(sqrt L + sqrt mu)^2, momentum = rate^2; rate measured over the tail
        x = torch.ones(2, dtype=torch.float64, requires_grad=True)
        beta = heavy_ball_rate(kappa) ** 2
        opt = SGD([x], lr=4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, momentum=beta)
        norms = []
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * (h * x * x).sum()).backward()
            opt.step()
            norms.append(float(x.detach().norm()))
        tail = steps // 2
        out["heavy_ball"].append((norms[-1] / norms[tail - 1]) ** (1 / (steps - tail)) if norms[-1] > 0 else 0.0)
    return out


def rosenbrock_losses(make, lr: float, steps: int) -> list[float]:
    """Losses of ``make(params, lr)`` on Rosenbrock's banana from (-1.5, 2)."""
    xy = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = make([xy], lr)
    losses = []
    for _ in range(steps):
        loss = (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def pl_demo(steps: int) -> tuple[list[float], list[float]]:
    """f(x) = x^2 + 3 sin^2 x is non-convex yet satisfies the PL inequality with mu = 1/32 (Karimi et al.
    2016); with L = 8 and step 1/L, GD obeys f(x_t) - f* <= (1 - mu/L)^t (f(x_0) - f*)."""
    L, mu = 8.0, 1 / 32
    x = torch.tensor([2.5], dtype=torch.float64, requires_grad=True)
    opt = SGD([x], lr=1 / L)
    gaps = []
    for _ in range(steps):
        f = x**2 + 3 * torch.sin(x) ** 2
        gaps.append(f.item())
        opt.zero_grad()
        f.sum().backward()
        opt.step()
    bound = [gaps[0] * (1 - mu / L) ** t for t in range(steps)]
    return gaps, bound
