"""Automatic differentiation from scratch (lab m02).

- ``Value``: a scalar reverse-mode engine (the core is the first ~100 lines below).
- ``Tensor``: the same idea over NumPy arrays (float64) with broadcasting: enough to write a transformer
  feed-forward block and a full transformer layer (``ffn_block``, ``transformer_layer``).
- ``numerical_gradient``: central differences, the independent check of any backward pass.
- ``Dual``: forward mode by dual numbers; ``jvp``, ``jacobian`` and ``hessian`` (dual numbers nested twice).

Dual numbers are generic over their parts, so ``Dual(Dual(x, 1), Dual(1, 0))`` carries second derivatives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import erf


class _Arithmetic:
    """The operators that follow from ``+``, ``*``, ``/`` and ``_lift`` (which wraps a plain number)."""

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return self._lift(other) - self

    def __rtruediv__(self, other):
        return self._lift(other) / self


def _topological(root) -> list:
    """Nodes of the graph below ``root``, children before parents (iterative: deep graphs are fine)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in node._prev)
    return order


# ===================================== scalar reverse mode =================================================


class Value(_Arithmetic):
    """A scalar that remembers how it was computed, so ``backward()`` can fill ``.grad`` of every input.

    Supports ``+ - * /``, ``**`` (number exponent), unary ``-``, ``exp()``, ``log()``, ``tanh()``,
    ``relu()``, with plain numbers on either side. ``backward()`` sets the output's grad to 1 and
    accumulates d(output)/d(node) into every node's ``.grad``.
    """

    def __init__(self, data: float, _children: tuple[Value, ...] = (), _op: str = ""):
        self.data = float(data)
        self.grad = 0.0
        self._backward: Callable[[], None] = lambda: None
        self._prev = _children
        self._op = _op

    @staticmethod
    def _lift(x) -> Value:
        return x if isinstance(x, Value) else Value(x)

    def _new(self, data: float, children: tuple[Value, ...], op: str, local_grads: tuple[float, ...]) -> Value:
        out = type(self)(data, children, op)

        def backward():
            for child, g in zip(children, local_grads, strict=True):
                child.grad += g * out.grad

        out._backward = backward
        return out

    def __add__(self, other) -> Value:
        other = self._lift(other)
        return self._new(self.data + other.data, (self, other), "+", (1.0, 1.0))

    def __mul__(self, other) -> Value:
        other = self._lift(other)
        return self._new(self.data * other.data, (self, other), "*", (other.data, self.data))

    def __pow__(self, k: float) -> Value:
        if not isinstance(k, int | float):
            raise TypeError("Value ** supports number exponents only")
        return self._new(self.data**k, (self,), f"**{k}", (k * self.data ** (k - 1),))

    def exp(self) -> Value:
        e = math.exp(self.data)
        return self._new(e, (self,), "exp", (e,))

    def log(self) -> Value:
        return self._new(math.log(self.data), (self,), "log", (1.0 / self.data,))

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return self._new(t, (self,), "tanh", (1 - t * t,))

    def relu(self) -> Value:
        return self._new(max(self.data, 0.0), (self,), "relu", (float(self.data > 0),))

    def __truediv__(self, other) -> Value:
        return self * (other**-1 if isinstance(other, Value) else 1.0 / other)

    def backward(self) -> None:
        self.grad = 1.0
        for node in reversed(_topological(self)):
            node._backward()

    def __repr__(self) -> str:
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"


# ===================================== tensor reverse mode =================================================


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


class Tensor(_Arithmetic):
    """A NumPy array (float64) with reverse-mode autodiff and broadcasting.

    Elementwise ``+ - * /``, ``**`` (number exponent), ``@`` (batched matmul), ``sum``/``mean`` over an axis
    or all, ``exp``, ``log``, ``tanh``, ``relu``, ``gelu`` (exact, erf-based), ``softmax(axis)``,
    ``reshape``, ``transpose(*axes)``, ``masked_fill(mask, value)``. ``backward()`` needs a scalar output
    (or takes the output's gradient) and accumulates into ``.grad`` (an array shaped like ``.data``).
    """

    def __init__(self, data, _children: tuple[Tensor, ...] = (), _op: str = ""):
        self.data = np.asarray(data, dtype=np.float64)
        self.grad = np.zeros_like(self.data)
        self._backward: Callable[[], None] = lambda: None
        self._prev = _children
        self._op = _op

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @staticmethod
    def _lift(x) -> Tensor:
        return x if isinstance(x, Tensor) else Tensor(x)

    def _new(self, data: np.ndarray, children: tuple[Tensor, ...], op: str,
             grad_fns: tuple[Callable[[np.ndarray], np.ndarray], ...]) -> Tensor:
        """A node whose child i receives ``grad_fns[i](out.grad)``, unbroadcast to its shape."""
        out = type(self)(data, children, op)

        def backward():
            for child, fn in zip(children, grad_fns, strict=True):
                child.grad = child.grad + _unbroadcast(fn(out.grad), child.shape)

        out._backward = backward
        return out

    def __add__(self, other) -> Tensor:
        other = self._lift(other)
        return self._new(self.data + other.data, (self, other), "+", (lambda g: g, lambda g: g))

    def __mul__(self, other) -> Tensor:
        other = self._lift(other)
        return self._new(self.data * other.data, (self, other), "*",
                         (lambda g: g * other.data, lambda g: g * self.data))

    def __truediv__(self, other) -> Tensor:
        other = self._lift(other)
        return self._new(self.data / other.data, (self, other), "/",
                         (lambda g: g / other.data, lambda g: -g * self.data / other.data**2))

    def __pow__(self, k: float) -> Tensor:
        return self._new(self.data**k, (self,), f"**{k}", (lambda g: g * k * self.data ** (k - 1),))

    def __matmul__(self, other) -> Tensor:
        other = self._lift(other)
        a, b = self.data, other.data
        return self._new(a @ b, (self, other), "@",
                         (lambda g: g @ np.swapaxes(b, -1, -2), lambda g: np.swapaxes(a, -1, -2) @ g))

    def sum(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        def grad(g):
            if axis is not None and not keepdims:
                g = np.expand_dims(g, axis)
            return np.broadcast_to(g, self.shape)

        return self._new(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum", (grad,))

    def mean(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        n = self.data.size if axis is None else self.shape[axis]
        return self.sum(axis, keepdims) * (1.0 / n)

    def exp(self) -> Tensor:
        e = np.exp(self.data)
        return self._new(e, (self,), "exp", (lambda g: g * e,))

    def log(self) -> Tensor:
        return self._new(np.log(self.data), (self,), "log", (lambda g: g / self.data,))

    def tanh(self) -> Tensor:
        t = np.tanh(self.data)
        return self._new(t, (self,), "tanh", (lambda g: g * (1 - t * t),))

    def relu(self) -> Tensor:
        return self._new(np.maximum(self.data, 0), (self,), "relu", (lambda g: g * (self.data > 0),))

    def gelu(self) -> Tensor:
        x = self.data
        cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return self._new(x * cdf, (self,), "gelu", (lambda g: g * (cdf + x * pdf),))

    def softmax(self, axis: int = -1) -> Tensor:
        z = self.data - self.data.max(axis=axis, keepdims=True)  # shift: no overflow, same result
        e = np.exp(z)
        s = e / e.sum(axis=axis, keepdims=True)
        return self._new(s, (self,), "softmax", (lambda g: s * (g - (g * s).sum(axis=axis, keepdims=True)),))

    def reshape(self, *shape: int) -> Tensor:
        return self._new(self.data.reshape(*shape), (self,), "reshape", (lambda g: g.reshape(self.shape),))

    def transpose(self, *axes: int) -> Tensor:
        inverse = np.argsort(axes)
        return self._new(self.data.transpose(axes), (self,), "transpose", (lambda g: g.transpose(inverse),))

    def masked_fill(self, mask, value: float) -> Tensor:
        mask = np.asarray(mask, dtype=bool)
        return self._new(np.where(mask, value, self.data), (self,), "masked_fill",
                         (lambda g: np.where(mask, 0.0, g),))

    def backward(self, grad: np.ndarray | None = None) -> None:
        if grad is None and self.data.size != 1:
            raise ValueError("backward() of a non-scalar Tensor needs the output's gradient")
        self.grad = np.ones_like(self.data) if grad is None else np.asarray(grad, dtype=np.float64)
        for node in reversed(_topological(self)):
            node._backward()

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape}, op={self._op or 'leaf'})"


def layer_norm(x: Tensor, gain: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * gain + bias (biased variance)."""
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / (var + eps) ** 0.5 * gain + bias


def ffn_block(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """Transformer feed-forward block: gelu(x @ w1 + b1) @ w2 + b2. x (B, T, C), w1 (C, H), w2 (H, C)."""
    return (x @ w1 + b1).gelu() @ w2 + b2


def transformer_layer(x: Tensor, p: dict[str, Tensor], n_heads: int) -> Tensor:
    """A pre-norm transformer layer with causal multi-head self-attention, in the tensor engine.

    x (B, T, C); ``p`` holds ln1_g, ln1_b, w_qkv (C, 3C), w_o (C, C), ln2_g, ln2_b, w1 (C, H), b1 (H,),
    w2 (H, C), b2 (C,). Returns x + attn(ln1(x)), then + ffn(ln2(.)) (B, T, C). Head h uses channels
    h*C/nh..(h+1)*C/nh of q, k and v (q, k, v are the three C-wide slices of ln1(x) @ w_qkv).
    """
    B, T, C = x.shape
    hd = C // n_heads
    qkv = layer_norm(x, p["ln1_g"], p["ln1_b"]) @ p["w_qkv"]  # (B, T, 3C)
    qkv = qkv.reshape(B, T, 3, n_heads, hd).transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hd)
    ones = [0.0] * 3
    parts = []
    for i in range(3):  # select q, k, v by a one-hot contraction (the engine has no indexing)
        sel = np.array(ones)
        sel[i] = 1.0
        parts.append((qkv * Tensor(sel.reshape(3, 1, 1, 1, 1))).sum(axis=0))
    q, k, v = parts  # (B, nh, T, hd)
    att = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(hd))  # (B, nh, T, T)
    att = att.masked_fill(np.triu(np.ones((T, T), dtype=bool), 1), -np.inf).softmax(-1)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C) @ p["w_o"]
    x = x + y
    return x + ffn_block(layer_norm(x, p["ln2_g"], p["ln2_b"]), p["w1"], p["b1"], p["w2"], p["b2"])


def numerical_gradient(f: Callable[..., float], arrays: Sequence[np.ndarray], eps: float = 1e-6
                       ) -> list[np.ndarray]:
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / 2 eps of a scalar ``f(*arrays)`` with
    respect to every entry of every array. ``arrays`` are left unchanged."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = f(*arrays)
            flat[i] = old - eps
            down = f(*arrays)
            flat[i] = old
            gflat[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


# ===================================== forward mode ========================================================


def _apply(x, name: str, fallback: Callable[[float], float]):
    return getattr(x, name)() if hasattr(x, name) else fallback(x)


class Dual(_Arithmetic):
    """A dual number a + b eps with eps^2 = 0: ``f(Dual(x, v)).dual`` is the directional derivative f'(x) v.

    Parts may be numbers or Duals themselves (nested duals give second derivatives). Supports
    ``+ - * /``, ``**`` (number exponent), unary ``-``, ``exp()``, ``log()``, ``tanh()``, ``sin()``,
    ``cos()``, with numbers on either side.
    """

    def __init__(self, real, dual=0.0):
        self.real, self.dual = real, dual

    @staticmethod
    def _lift(x) -> Dual:
        return x if isinstance(x, Dual) else Dual(x, 0.0)

    def __add__(self, o) -> Dual:
        o = self._lift(o)
        return Dual(self.real + o.real, self.dual + o.dual)

    def __mul__(self, o) -> Dual:
        o = self._lift(o)
        return Dual(self.real * o.real, self.real * o.dual + self.dual * o.real)

    def __truediv__(self, o) -> Dual:
        o = self._lift(o)
        return Dual(self.real / o.real, (self.dual * o.real - self.real * o.dual) / (o.real * o.real))

    def __pow__(self, k: float) -> Dual:
        return Dual(self.real**k, self.dual * k * self.real ** (k - 1))

    def exp(self) -> Dual:
        e = _apply(self.real, "exp", math.exp)
        return Dual(e, self.dual * e)

    def log(self) -> Dual:
        return Dual(_apply(self.real, "log", math.log), self.dual / self.real)

    def tanh(self) -> Dual:
        t = _apply(self.real, "tanh", math.tanh)
        return Dual(t, self.dual * (1 - t * t))

    def sin(self) -> Dual:
        return Dual(_apply(self.real, "sin", math.sin), self.dual * _apply(self.real, "cos", math.cos))

    def cos(self) -> Dual:
        return Dual(_apply(self.real, "cos", math.cos), -self.dual * _apply(self.real, "sin", math.sin))

    def __repr__(self) -> str:
        return f"Dual({self.real!r}, {self.dual!r})"


def _as_list(y) -> list:
    return list(y) if isinstance(y, list | tuple) else [y]


def jvp(f: Callable[[list], object], x: Sequence[float], v: Sequence[float]) -> tuple[list[float], list[float]]:
    """Forward mode: (f(x), J_f(x) v) for f taking a list of scalars and returning a scalar or a list."""
    out = _as_list(f([Dual(float(a), float(b)) for a, b in zip(x, v, strict=True)]))
    return [float(Dual._lift(y).real) for y in out], [float(Dual._lift(y).dual) for y in out]


def jacobian(f: Callable[[list], object], x: Sequence[float]) -> list[list[float]]:
    """J[i][j] = d f_i / d x_j, one forward pass per input direction."""
    cols = [jvp(f, x, [float(i == j) for i in range(len(x))])[1] for j in range(len(x))]
    return [list(row) for row in zip(*cols, strict=True)]


def hessian(f: Callable[[list], object], x: Sequence[float]) -> list[list[float]]:
    """H[i][j] = d^2 f / dx_i dx_j of a scalar f, by dual numbers nested twice (forward over forward)."""
    n = len(x)
    H = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            args = [Dual(Dual(float(x[k]), float(k == i)), Dual(float(k == j), 0.0)) for k in range(n)]
            y = Dual._lift(f(args))
            second = Dual._lift(y.dual).dual
            H[i][j] = H[j][i] = float(second)
    return H
