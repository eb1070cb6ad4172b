"""Lab m02: automatic differentiation. A scalar reverse-mode engine, a tensor engine that expresses a
transformer layer, finite-difference gradient checking, forward mode, Jacobians and Hessians; every
derivative is judged against PyTorch (autograd and torch.func) in float64."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llmlab import autodiff
from llmlab.labs.base import CheckContext, Lab, LabLimits
from llmlab.plots import figure

LAB = Lab(
    "m02", module=__name__, reference="llmlab.autodiff",
    spec=["Value", "Tensor", "layer_norm", "ffn_block", "transformer_layer", "numerical_gradient", "Dual", "jvp",
          "jacobian", "hessian"],
    limits=LabLimits(call_timeout_s=60, total_timeout_s=300, memory_mb=2048),
    own_work=("the derivatives: reverse mode (Value, Tensor on NumPy), finite differences, forward mode (Dual), "
              "Jacobians and Hessians from your own engines"),
    forbidden=("torch:Tensor.backward", "torch.autograd:grad", "torch.autograd:backward",
               "torch.autograd.functional:jacobian", "torch.autograd.functional:hessian",
               "torch.autograd.functional:jvp", "torch.autograd.functional:vjp", "torch.func:grad",
               "torch.func:jacrev", "torch.func:jacfwd", "torch.func:hessian", "torch.func:jvp", "torch.func:vjp",
               "jax", "autograd", "numdifftools", "scipy.optimize:approx_fprime"),
    preload=("scipy.special",),
)

# ---------------------------------------------------------------- scalar programs, run on any number type
# Each step appends a new node computed from earlier ones; the "safe" forms keep values finite.
_STEPS = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1), "pow2": lambda a, b: a**2, "pow3": lambda a, b: a**3,
    "exp": lambda a, b: a.tanh().exp(), "log": lambda a, b: (a * a + 1).log(), "tanh": lambda a, b: a.tanh(),
    "relu": lambda a, b: a.relu(), "radd": lambda a, b: 2.5 + a, "rsub": lambda a, b: 1.5 - a,
    "rmul": lambda a, b: -0.75 * a, "rdiv": lambda a, b: 3.0 / (a * a + 2), "neg": lambda a, b: -a,
    "reuse": lambda a, b: a * a - a,
}


def run_program(program: list[tuple[str, int, int]], leaves: list):
    nodes = list(leaves)
    for op, i, j in program:
        nodes.append(_STEPS[op](nodes[i], nodes[j]))
    out = nodes[len(leaves)]
    for node in nodes[len(leaves) + 1:]:
        out = out + node
    return out


def probe_scalar(sub, program, xs):
    leaves = [sub.Value(x) for x in xs]
    out = run_program(program, leaves)
    out.backward()
    return [float(out.data), [float(v.grad) for v in leaves]]


def _torch_scalar(program, xs):
    leaves = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = run_program(program, leaves)
    out.backward()
    return float(out.detach()), [0.0 if v.grad is None else float(v.grad) for v in leaves]


# ---------------------------------------------------------------- tensor ops: learner's form, torch's form
_TENSOR_OPS = {
    "add_broadcast": (lambda a, b: a + b, lambda a, b: a + b),
    "sub_broadcast": (lambda a, b: a - b, lambda a, b: a - b),
    "mul_broadcast": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / (b * b + 1.0), lambda a, b: a / (b * b + 1.0)),
    "matmul_batched": (lambda a, b: a @ b, lambda a, b: a @ b),
    "sum_axis": (lambda a, b: a.sum(axis=1), lambda a, b: a.sum(dim=1)),
    "mean_keepdims": (lambda a, b: a.mean(axis=-1, keepdims=True) * b, lambda a, b: a.mean(-1, keepdim=True) * b),
    "exp": (lambda a, b: a.exp(), lambda a, b: a.exp()),
    "log": (lambda a, b: (a * a + 1.0).log(), lambda a, b: (a * a + 1.0).log()),
    "tanh": (lambda a, b: a.tanh(), lambda a, b: a.tanh()),
    "relu": (lambda a, b: a.relu(), lambda a, b: a.relu()),
    "gelu": (lambda a, b: a.gelu(), lambda a, b: F.gelu(a)),
    "softmax": (lambda a, b: a.softmax(-1), lambda a, b: a.softmax(-1)),
    "pow": (lambda a, b: a**3, lambda a, b: a**3),
}


def _op_shapes(op: str, rng) -> tuple[tuple, tuple]:
    B, T, C = (int(n) for n in rng.integers(2, 5, size=3))
    if op.endswith("broadcast"):
        return (B, 1, C), (T, C)
    if op == "matmul_batched":
        return (B, T, C), (C, T + 1)
    if op == "mean_keepdims":
        return (B, T, C), (B, T, 1)
    return (B, T, C), (B, T, C)


def probe_tensor_op(sub, op, a, b, r):
    ta, tb = sub.Tensor(a), sub.Tensor(b)
    out = _TENSOR_OPS[op][0](ta, tb)
    (out * sub.Tensor(r)).sum().backward()
    return [out.data, ta.grad, tb.grad]


# ---------------------------------------------------------------- FFN and transformer layer
PARAM_SHAPES = lambda C, H: {"ln1_g": (C,), "ln1_b": (C,), "w_qkv": (C, 3 * C), "w_o": (C, C), "ln2_g": (C,),
                              "ln2_b": (C,), "w1": (C, H), "b1": (H,), "w2": (H, C), "b2": (C,)}


def torch_layer(x, p, n_heads):
    """PyTorch's own ops for the same layer: the independent reference."""
    B, T, C = x.shape
    h = F.layer_norm(x, (C,), p["ln1_g"], p["ln1_b"])
    q, k, v = (h @ p["w_qkv"]).split(C, -1)
    split = lambda t: t.view(B, T, n_heads, C // n_heads).transpose(1, 2)
    y = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True).transpose(1, 2).reshape(B, T, C)
    x = x + y @ p["w_o"]
    h = F.layer_norm(x, (C,), p["ln2_g"], p["ln2_b"])
    return x + F.gelu(h @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def probe_ffn(sub, x, w1, b1, w2, b2, r):
    ts = [sub.Tensor(a) for a in (x, w1, b1, w2, b2)]
    out = sub.ffn_block(*ts)
    (out * sub.Tensor(r)).sum().backward()
    return [out.data, [t.grad for t in ts]]


def probe_layer(sub, x, params, n_heads, r):
    tx = sub.Tensor(x)
    tp = {k: sub.Tensor(v) for k, v in params.items()}
    out = sub.transformer_layer(tx, tp, n_heads)
    (out * sub.Tensor(r)).sum().backward()
    return [out.data, tx.grad, {k: t.grad for k, t in tp.items()}]


def probe_gradcheck_layer(sub, x, params, n_heads, r):
    """The learner's finite differences of the learner's own layer, next to the learner's backward."""
    tp = {k: sub.Tensor(v) for k, v in params.items()}
    loss = lambda xx: float((np.asarray(sub.transformer_layer(sub.Tensor(xx), tp, n_heads).data) * r).sum())
    (numeric,) = sub.numerical_gradient(loss, [x])
    tx = sub.Tensor(x)
    (sub.transformer_layer(tx, tp, n_heads) * sub.Tensor(r)).sum().backward()
    return [numeric, tx.grad]


def _np_ffn_loss(r):
    """The FFN's loss in plain NumPy/SciPy, so finite differences need no autodiff engine at all."""
    from scipy.special import erf

    def loss(x, w1, b1, w2, b2):
        h = x @ w1 + b1
        return float((((0.5 * h * (1 + erf(h / math.sqrt(2)))) @ w2 + b2) * r).sum())

    return loss


def probe_numerical_gradient(sub, arrays, r):
    return list(sub.numerical_gradient(_np_ffn_loss(r), arrays))


# ---------------------------------------------------------------- forward mode
def fwd_fn(v):
    """R^3 -> R^3, built from the operations Dual supports."""
    return [v[0].tanh() * v[1].exp() + v[2] ** 2, (v[0] * v[1] + 2.0).log() / (v[2] * v[2] + 1.0),
            v[1].sin() * v[2].cos() - 3.0 * v[0]]


def scalar_fn(v):
    return v[0].tanh() * v[1].exp() + (v[0] * v[1] + 2.0).log() * v[2] ** 2 + v[2].sin() / (v[0] * v[0] + 1.0)


def probe_jvp(sub, x, v):
    return [list(y) for y in sub.jvp(fwd_fn, x, v)]


def probe_dual(sub, x, v):
    """The learner's Dual class used directly: the directional derivative of scalar_fn."""
    return float(scalar_fn([sub.Dual(a, b) for a, b in zip(x, v, strict=True)]).dual)


def probe_reverse_vs_forward(sub, x, v):
    """Directional derivative of a scalar function by the learner's forward mode and reverse mode."""
    _, (fwd,) = sub.jvp(lambda u: [u[0].tanh() * u[1].exp() + (u[0] * u[1] + 2.0).log() * u[2] ** 2], x, v)
    leaves = [sub.Value(a) for a in x]
    out = leaves[0].tanh() * leaves[1].exp() + (leaves[0] * leaves[1] + 2.0).log() * leaves[2] ** 2
    out.backward()
    return [float(fwd), float(sum(leaf.grad * d for leaf, d in zip(leaves, v, strict=True)))]


def probe_jacobian(sub, x):
    return sub.jacobian(fwd_fn, x)


def probe_hessian(sub, x):
    return sub.hessian(scalar_fn, x)


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# ================================================================ checks
@LAB.check(points=3, grades="an autodiff engine (micrograd-like)")
def scalar_engine(ctx: CheckContext):
    """Value: outputs and gradients of random expression graphs (shared nodes included) equal torch.autograd
    within 1e-10."""
    for trial in range(4):
        n = ctx.randint(2, 5)
        program = []
        for step in range(ctx.randint(4, 12)):
            op = ctx.choice(sorted(_STEPS))
            program.append((op, ctx.randint(0, n + step), ctx.randint(0, n + step)))
        xs = [float(x) for x in ctx.rng.normal(size=n)]
        value, grads = ctx.run(probe_scalar, program, xs)
        want_value, want_grads = _torch_scalar(program, xs)
        ctx.close(value, want_value, atol=1e-10, rtol=1e-10, what=f"graph {trial} output")
        ctx.close(_t(grads), _t(want_grads), atol=1e-10, rtol=1e-10,
                  what=f"graph {trial} gradients (ops {[p[0] for p in program]})")


@LAB.check(points=3, grades="an autodiff engine (micrograd-like)")
def tensor_engine(ctx: CheckContext):
    """Tensor: every op's output and input gradients (broadcasting included) equal torch.autograd within 1e-10."""
    for op in sorted(_TENSOR_OPS):
        sa, sb = _op_shapes(op, ctx.rng)
        a, b = ctx.rng.normal(size=sa), ctx.rng.normal(size=sb)
        ta, tb = _t(a).requires_grad_(), _t(b).requires_grad_()
        want = _TENSOR_OPS[op][1](ta, tb)
        r = ctx.rng.normal(size=tuple(want.shape))
        (want * _t(r)).sum().backward()
        out, ga, gb = ctx.run(probe_tensor_op, op, a, b, r)
        ctx.close(out, want.detach(), atol=1e-10, rtol=1e-10, what=f"{op}: output")
        ctx.close(ga, ta.grad, atol=1e-10, rtol=1e-10, what=f"{op}: gradient of the first input {sa}")
        if tb.grad is not None:
            ctx.close(gb, tb.grad, atol=1e-10, rtol=1e-10, what=f"{op}: gradient of the second input {sb}")


def _layer_inputs(ctx: CheckContext, B: int, T: int, C: int, H: int):
    params = {k: ctx.rng.normal(size=s) * (0.5 if len(s) > 1 else 1.0) for k, s in PARAM_SHAPES(C, H).items()}
    return ctx.rng.normal(size=(B, T, C)), params, ctx.rng.normal(size=(B, T, C))


@LAB.check(points=2, grades="gradient check of a transformer feed-forward block")
def ffn_gradients(ctx: CheckContext):
    """ffn_block in the tensor engine: output and all five gradients equal torch.autograd within 1e-10."""
    x, p, r = _layer_inputs(ctx, 2, ctx.randint(2, 6), 6, 10)
    arrays = [x, p["w1"], p["b1"], p["w2"], p["b2"]]
    ts = [_t(a).requires_grad_() for a in arrays]
    want = F.gelu(ts[0] @ ts[1] + ts[2]) @ ts[3] + ts[4]
    (want * _t(r)).sum().backward()
    out, grads = ctx.run(probe_ffn, *arrays, r)
    ctx.close(out, want.detach(), atol=1e-10, rtol=1e-10, what="ffn_block output")
    for name, g, t in zip(("x", "w1", "b1", "w2", "b2"), grads, ts, strict=True):
        ctx.close(g, t.grad, atol=1e-10, rtol=1e-10, what=f"ffn_block d/d{name}")


@LAB.check(points=3, grades="chain rule in matrix form")
def transformer_layer_gradients(ctx: CheckContext):
    """transformer_layer (causal attention + FFN + LayerNorm + residuals): output and every gradient equal a
    PyTorch implementation (layer_norm, scaled_dot_product_attention, gelu) within 1e-9."""
    n_heads = ctx.choice([1, 2])
    x, p, r = _layer_inputs(ctx, 2, ctx.randint(2, 6), 4 * n_heads, 12)
    tx = _t(x).requires_grad_()
    tp = {k: _t(v).requires_grad_() for k, v in p.items()}
    want = torch_layer(tx, tp, n_heads)
    (want * _t(r)).sum().backward()
    out, gx, gp = ctx.run(probe_layer, x, p, n_heads, r)
    ctx.close(out, want.detach(), atol=1e-9, rtol=1e-9, what="layer output")
    ctx.close(gx, tx.grad, atol=1e-9, rtol=1e-9, what="layer d/dx")
    for k, t in tp.items():
        ctx.close(gp[k], t.grad, atol=1e-9, rtol=1e-9, what=f"layer d/d{k}")


def _rel(a, b) -> float:
    a, b = _t(a), _t(b)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@LAB.check(points=2, grades="gradient check of a transformer feed-forward block")
def gradient_checker(ctx: CheckContext):
    """numerical_gradient (central differences) matches torch.autograd on a FFN block and, applied to the
    learner's own transformer layer, matches its backward pass: relative error <= 1e-6 (float64)."""
    x, p, r = _layer_inputs(ctx, 1, 3, 4, 6)
    arrays = [x, p["w1"], p["b1"], p["w2"], p["b2"]]
    ts = [_t(a).requires_grad_() for a in arrays]
    ((F.gelu(ts[0] @ ts[1] + ts[2]) @ ts[3] + ts[4]) * _t(r)).sum().backward()
    grads = ctx.run(probe_numerical_gradient, arrays, r)
    ctx.expect(len(grads) == 5, f"numerical_gradient returned {len(grads)} arrays for 5 inputs")
    for name, g, t in zip(("x", "w1", "b1", "w2", "b2"), grads, ts, strict=True):
        g = ctx.tensor(g, f"numerical_gradient d/d{name}", dtype=torch.float64, shape=t.grad.shape)
        err = _rel(g, t.grad)
        ctx.expect(err <= 1e-6, f"finite differences of the FFN d/d{name}: relative error {err:.2e} > 1e-6")
    numeric, analytic = ctx.run(probe_gradcheck_layer, x, p, 2, r)
    numeric = ctx.tensor(numeric, "numerical_gradient of your layer", dtype=torch.float64, shape=x.shape)
    tx = _t(x).requires_grad_()
    (torch_layer(tx, {k: _t(v) for k, v in p.items()}, 2) * _t(r)).sum().backward()
    err = _rel(numeric, tx.grad)
    ctx.expect(err <= 1e-6, f"finite differences of the transformer layer: relative error {err:.2e} > 1e-6")
    err = _rel(numeric, analytic)
    ctx.expect(err <= 1e-6, f"gradient check of your own layer: relative error {err:.2e} > 1e-6")


@LAB.check(points=2, grades="forward vs reverse mode")
def forward_mode(ctx: CheckContext):
    """jvp by dual numbers equals torch.func.jvp, and forward mode agrees with reverse mode (Value) on a
    directional derivative, within 1e-10."""
    x, v = ctx.rng.uniform(0.1, 1.0, size=3).tolist(), ctx.rng.normal(size=3).tolist()
    (value, tangent) = ctx.run(probe_jvp, x, v)
    want_v, want_t = torch.func.jvp(lambda t: torch.stack(fwd_fn(list(t))), (_t(x),), (_t(v),))
    ctx.close(_t(value), want_v, atol=1e-10, rtol=1e-10, what="jvp value f(x)")
    ctx.close(_t(tangent), want_t, atol=1e-10, rtol=1e-10, what="jvp tangent J v")
    want = torch.func.jvp(lambda t: scalar_fn(list(t)), (_t(x),), (_t(v),))[1]
    ctx.close(ctx.run(probe_dual, x, v), want, atol=1e-10, rtol=1e-10, what="Dual: f(x + v eps).dual")
    fwd, rev = ctx.run(probe_reverse_vs_forward, x, v)
    ctx.close(fwd, rev, atol=1e-10, rtol=1e-10, what="forward-mode vs reverse-mode directional derivative")


@LAB.check(points=2, grades="Hessians")
def jacobian_and_hessian(ctx: CheckContext):
    """jacobian equals torch.func.jacrev and hessian equals torch.func.hessian within 1e-9."""
    x = ctx.rng.uniform(0.1, 1.0, size=3).tolist()
    J = ctx.run(probe_jacobian, x)
    ctx.close(_t(J), torch.func.jacrev(lambda t: torch.stack(fwd_fn(list(t))))(_t(x)), atol=1e-9,
              rtol=1e-9, what="jacobian")
    H = ctx.run(probe_hessian, x)
    ctx.close(_t(H), torch.func.hessian(lambda t: scalar_fn(list(t)))(_t(x)), atol=1e-9, rtol=1e-9,
              what="hessian")


# ================================================================ seeded bugs
class ValueMulGradSwapped(autodiff.Value):
    def __mul__(self, other):
        other = other if isinstance(other, autodiff.Value) else type(self)(other)
        return self._new(self.data * other.data, (self, other), "*", (self.data, other.data))


class TensorNoUnbroadcast(autodiff.Tensor):
    def _new(self, data, children, op, grad_fns):
        out = type(self)(data, children, op)

        def backward():
            for child, fn in zip(children, grad_fns, strict=True):
                g = fn(out.grad)
                child.grad = child.grad + (g if g.shape == child.shape else g.reshape(-1)[: child.grad.size]
                                           .reshape(child.shape))

        out._backward = backward
        return out


class TensorSoftmaxGradWrong(autodiff.Tensor):
    def softmax(self, axis=-1):
        e = np.exp(self.data - self.data.max(axis=axis, keepdims=True))
        s = e / e.sum(axis=axis, keepdims=True)
        return self._new(s, (self,), "softmax", (lambda g: g * s * (1 - s),))


class TensorGeluTanh(autodiff.Tensor):
    def gelu(self):
        x = self.data
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        t = np.tanh(inner)
        dinner = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x**2)
        return self._new(0.5 * x * (1 + t), (self,), "gelu", (lambda g: g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t)
                                                                              * dinner),))


def numerical_gradient_half_step(f, arrays, eps=1e-6):
    return [g * 2 for g in autodiff.numerical_gradient(f, arrays, eps)]


class DualProductRuleWrong(autodiff.Dual):
    def __mul__(self, o):
        o = self._lift(o)
        return DualProductRuleWrong(self.real * o.real, self.dual * o.real)

    @staticmethod
    def _lift(x):
        return x if isinstance(x, autodiff.Dual) else DualProductRuleWrong(x, 0.0)


def hessian_diagonal_only(f, x):
    H = autodiff.hessian(f, x)
    return [[H[i][j] if i == j else 0.0 for j in range(len(x))] for i in range(len(x))]


LAB.bug("value_mul_grad_swapped", Value=ValueMulGradSwapped)
LAB.bug("tensor_no_unbroadcast", Tensor=TensorNoUnbroadcast)
LAB.bug("softmax_grad_diagonal_only", Tensor=TensorSoftmaxGradWrong)
LAB.bug("gelu_tanh_approximation", Tensor=TensorGeluTanh)
LAB.bug("numerical_gradient_half_step", numerical_gradient=numerical_gradient_half_step)
LAB.bug("dual_product_rule_wrong", Dual=DualProductRuleWrong)
LAB.bug("hessian_diagonal_only", hessian=hessian_diagonal_only)


# ================================================================ deliverable
def run(profile: str, out: Path) -> tuple[dict, str]:
    big = profile == "full"
    rng = np.random.default_rng(0)
    C, H, T = (32, 128, 16) if big else (8, 16, 4)
    x = rng.normal(size=(1, T, C))
    p = {k: rng.normal(size=s) * (0.5 if len(s) > 1 else 1.0) for k, s in PARAM_SHAPES(C, H).items()}
    r = rng.normal(size=(1, T, C))
    tp = {k: autodiff.Tensor(v) for k, v in p.items()}
    tx = autodiff.Tensor(x)
    (autodiff.transformer_layer(tx, tp, 2) * autodiff.Tensor(r)).sum().backward()
    loss = lambda xx: float((autodiff.transformer_layer(autodiff.Tensor(xx), tp, 2).data * r).sum())
    epsilons = np.logspace(-10, -1, 19)
    errors = [_rel(autodiff.numerical_gradient(loss, [x], eps)[0], tx.grad) for eps in epsilons]
    with figure(out / "gradcheck_vs_eps.png", "Finite differences vs reverse mode, transformer layer") as ax:
        ax.loglog(epsilons, errors, "o-")
        ax.axhline(1e-6, color="r", ls="--", label="limit 1e-6")
        ax.set_xlabel("step eps")
        ax.set_ylabel("max relative error")
        ax.legend()
    best_eps = float(epsilons[int(np.argmin(errors))])

    xs = [0.3, 0.7, -0.2]
    Hm = np.array(autodiff.hessian(scalar_fn, xs))
    Ht = torch.func.hessian(lambda t: scalar_fn(list(t)))(_t(xs)).numpy()
    metrics = {"gradcheck_min_rel_error": float(min(errors)), "gradcheck_best_eps": best_eps,
               "gradcheck_rel_error_at_1e-6": float(errors[list(np.round(np.log10(epsilons), 3)).index(-6.0)]),
               "hessian_max_abs_error_vs_torch_func": float(np.abs(Hm - Ht).max())}
    report = f"""
Finite differences against the tensor engine's reverse mode on a transformer layer (C={C}, T={T}): the
error falls with eps (truncation, O(eps^2)) until round-off takes over (O(1/eps)); the best step here is
{best_eps:.0e} with relative error {min(errors):.1e}.

The tensor engine's speed against torch autograd is measured by `make bench` (benchmarks/autodiff_ffn.py).

Hessian by nested dual numbers vs torch.func.hessian: max abs error
{metrics['hessian_max_abs_error_vs_torch_func']:.1e}.

![gradcheck](gradcheck_vs_eps.png)
"""
    return metrics, report
