"""Matrix sign (polar factor) ``U V^T`` by odd-quintic Newton–Schulz iterations, and its SVD reference.

For ``x = U S V^T``, ``msign(x) = U p_K(...p_1(S)...) V^T`` where each ``p_t`` is an
odd quintic. Three ingredients make it fast and accurate:

* **Normalization by a cheap, safe bound on sigma_1.** The Gram square
  ``G^2 = (x x^T)^2`` is needed by the first step anyway. Its Frobenius norm
  gives the Schatten-8 norm ``s8 >= sigma_1`` (at most ``rank^(1/8)`` times
  too large), and a few power steps with it (several start vectors) give a
  tight lower bound ``sigma_hat``. The scale is
  ``min(s8, max(POWER_SAFETY * sigma_hat, s8 / max_input))``:
  tight whenever the estimate is, and never small enough to push the top
  singular value beyond the range the first polynomial tolerates
  (``max_input``: 1.05, or 1.01 for the paper's Polar Express table; the
  Polar Express polynomials blow up above it). Normalizing by the Frobenius
  norm instead divides the singular values by up to ``sqrt(rank)``, wasting
  two or three iterations.
* **Per-step optimal coefficients** (Polar Express) or Keller's constants.
* **Iterating on the smaller side, and on the Gram matrix for wide shapes.**
  With ``m <= n``, every step is ``X <- (a I + b A + c A^2) X`` with ``A = X X^T``.
  All these polynomials in ``G = X_0 X_0^T`` commute, so for ``n >= 1.5 m``
  the ``m x n`` iterate is never formed: the ``m x m`` factor ``Q`` and ``A`` are
  updated (``Q <- B Q``, ``A <- B A B``) and ``X_K = Q X_0`` is applied once,
  costing ``4 m^2 n + (8K - 6) m^3`` flops instead of ``K (4 m^2 n + 2 m^3)``.

All loops are unrolled straight-line matmuls, batched over leading axes, in
the orientation of ``x`` (no transposed copies), with the normalizing scalars
folded into small factors rather than applied to the large matrix.

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024.
    https://kellerjordan.github.io/posts/muon/

    Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign
    Methods and Their Application to the Muon Algorithm", 2025.
    https://arxiv.org/abs/2505.16932

    Higham, "Functions of Matrices: Theory and Computation", SIAM 2008,
    chapter 8 (the polar decomposition and Newton–Schulz iterations).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.linalg._sharding import sharding_like
from jaxlab.linalg.polar_coeffs import POWER_SAFETY, coefficient_table, max_input
from jaxlab.linalg.power_iteration import psd_eigenvalue_lower_bound

__all__ = ["msign", "msign_svd"]

_GRAM_RATIO = 1.5  # Gram iteration is cheaper once n / m exceeds this (any K >= 2).
_MIN_SCALE = 1e-6  # only reached for the zero matrix; keeps scale**4 a normal float32.


class _Ops:
    """Matmuls of one orientation: the Gram side is the short side, no transposes materialized.

    ``tall`` means ``x`` is ``(..., m, n)`` with ``m > n``: then ``A = x^T x`` and a
    symmetric factor ``B`` acts as ``x B``; otherwise ``A = x x^T`` and ``B x``.
    Operands are cast to ``op`` (e.g. bfloat16) and accumulated in ``acc``. With
    ``op == acc`` the products are pinned to ``Precision.HIGHEST`` on CPU only (as
    before); on GPU/TPU ``jax.default_matmul_precision`` decides. Under
    explicit sharding, the small Gram-side factors are replicated over their
    matrix axes (batch axes keep their sharding) and full-size results keep the
    sharding of ``x``; without it, XLA's partitioner decides.
    """

    def __init__(self, x: jax.Array, op, acc):
        self.tall, self.op, self.acc = x.shape[-2] > x.shape[-1], op, acc
        # HIGHEST would force float32 emulation (several bf16/TF32 passes) on accelerators.
        self.precision = jax.lax.Precision.HIGHEST if op == acc and jax.default_backend() == "cpu" else None
        self.small_out = sharding_like(x, lambda spec: (*spec[:-2], None, None))
        self.full_out = sharding_like(x, lambda spec: spec)

    def _dot(self, spec: str, a: jax.Array, b: jax.Array, out) -> jax.Array:
        a, b = a.astype(self.op), b.astype(self.op)
        return jnp.einsum(spec, a, b, precision=self.precision, preferred_element_type=self.acc, out_sharding=out)

    def gram(self, y: jax.Array) -> jax.Array:  # (..., k, k), k = short side
        return self._dot("...ai,...aj->...ij" if self.tall else "...ia,...ja->...ij", y, y, self.small_out)

    def mm(self, a: jax.Array, b: jax.Array) -> jax.Array:  # (k, k) @ (k, k)
        return self._dot("...ij,...jk->...ik", a, b, self.small_out)

    def apply(self, b: jax.Array, y: jax.Array) -> jax.Array:  # B y (wide) or y B (tall)
        if self.tall:
            return self._dot("...aj,...ji->...ai", y, b, self.full_out)
        return self._dot("...ij,...ja->...ia", b, y, self.full_out)


def _validate(x, steps, normalization, method, power_steps, dtype, eps) -> None:
    if x.ndim < 2:
        raise ValueError(f"msign: x must have shape (..., m, n), got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"msign: x must be a floating-point array, got dtype {x.dtype}")
    if isinstance(steps, bool) or not (isinstance(steps, int) or hasattr(steps, "dtype")):
        raise ValueError(f"msign: steps must be an int >= 1, got {steps!r}")
    if isinstance(steps, int) and steps < 1:
        raise ValueError(f"msign: steps must be an int >= 1, got {steps}")
    if hasattr(steps, "dtype") and (jnp.ndim(steps) != 0 or not jnp.issubdtype(steps.dtype, jnp.integer)):
        raise ValueError(f"msign: steps must be a scalar integer, got dtype {steps.dtype} and shape {jnp.shape(steps)}")
    if normalization not in ("power", "frobenius"):
        raise ValueError(f"msign: normalization must be 'power' or 'frobenius', got {normalization!r}")
    if method not in ("auto", "gram", "direct"):
        raise ValueError(f"msign: method must be 'auto', 'gram' or 'direct', got {method!r}")
    if isinstance(power_steps, bool) or not isinstance(power_steps, int) or power_steps < 1:
        raise ValueError(f"msign: power_steps must be an int >= 1, got {power_steps!r}")
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"msign: dtype must be a floating dtype or None, got {dtype!r}")
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) or hasattr(eps, "dtype")):
        raise ValueError(f"msign: eps must be a scalar >= 0, got {eps!r}")
    if isinstance(eps, (int, float)) and not eps >= 0:
        raise ValueError(f"msign: eps must be a scalar >= 0, got {eps}")
    if hasattr(eps, "dtype") and jnp.ndim(eps) != 0:
        raise ValueError(f"msign: eps must be a scalar >= 0, got shape {jnp.shape(eps)}")


def _row(table, t: int):
    """Coefficients of step ``t``: Python floats for a constant table, scalars for a traced one."""
    i = min(t, table.shape[0] - 1)
    if isinstance(table, np.ndarray):
        return tuple(float(v) for v in table[i])
    return table[i, 0], table[i, 1], table[i, 2]


def _normalize(x: jax.Array, ops: _Ops, normalization: str, power_steps: int, top: float, eps):
    """Scale and Gram factors for ``x`` (..., m, n) without materializing normalized copies of it.

    Returns ``(xk, r, A, A^2)``: ``xk = x / max|x|`` (guards the Gram products against
    over/underflow), the per-matrix scalar ``r`` (..., 1, 1) such that ``r * xk`` has
    singular values in (0, ~1], and ``A`` = Gram matrix of ``r * xk`` and its square.
    The Gram square is what the first iteration needs anyway; it also gives the
    estimate of ``sigma_1``. ``top`` is the largest normalized singular value the
    coefficients tolerate; ``eps`` is added to ``|x|_F`` under Frobenius normalization.
    """
    amax = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True).astype(ops.acc)
    xk = x * jnp.where(amax > 0, 1.0 / amax, 1.0).astype(x.dtype)
    g = ops.gram(xk)  # (..., k, k)
    fro2 = jnp.trace(g, axis1=-2, axis2=-1)[..., None, None]  # |xk|_F^2
    g = g / jnp.where(fro2 > 0, fro2, 1.0)  # Gram of xk / |xk|_F: sigma_1 <= 1
    g2 = ops.mm(g, g)
    if normalization == "power":
        # sigma_1 <= s8 = |G^2|_F^(1/4) (Schatten-8 norm) rigorously but loosely (up to rank^(1/8));
        # POWER_SAFETY times the power estimate is tight but heuristic. Never going below
        # s8 / top keeps the top normalized value inside the first polynomial's range.
        lam = psd_eigenvalue_lower_bound(g2.astype(jnp.float32), steps=power_steps)  # <= sigma_1^4
        s8 = jnp.sqrt(jnp.sqrt(jnp.sqrt(jnp.sum(jnp.square(g2.astype(jnp.float32)), axis=(-2, -1)))))
        estimate = POWER_SAFETY * jnp.sqrt(jnp.sqrt(jnp.maximum(lam, 0.0)))
        scale = jnp.minimum(s8, jnp.maximum(estimate, s8 / top))
    else:
        # r * xk = x / (|x|_F + eps): |x|_F = amax * |xk|_F, so the scale is 1 + eps / |x|_F.
        fro = (jnp.where(amax > 0, amax, 1.0) * jnp.sqrt(jnp.where(fro2 > 0, fro2, 1.0)))[..., 0, 0]
        scale = 1.0 + jnp.asarray(eps, ops.acc) / fro
    scale = jnp.maximum(scale, _MIN_SCALE)[..., None, None].astype(ops.acc)  # (..., 1, 1)
    inv2 = 1.0 / jnp.square(scale)
    r = 1.0 / (jnp.sqrt(jnp.where(fro2 > 0, fro2, 1.0)) * scale)
    return xk, r, g * inv2, g2 * jnp.square(inv2)


def _direct(ops: _Ops, xk, r, a_mat, a2, table, steps: int):
    """K steps of ``y <- a y + (b A + c A^2) y`` on the full iterate; ``y_0 = r xk``."""
    a, b, c = _row(table, 0)
    y = (a * r) * xk + ops.apply(r * (b * a_mat + c * a2), xk)
    for t in range(1, steps):
        a, b, c = _row(table, t)
        a_mat = ops.gram(y)
        y = a * y + ops.apply(b * a_mat + c * ops.mm(a_mat, a_mat), y)
    return y


def _gram_iteration(ops: _Ops, xk, r, a_mat, a2, table, steps: int):
    """The same iteration on short-side factors: ``Q <- B Q``, ``A <- B A B``; returns ``(r Q) xk``."""
    eye = jnp.eye(a_mat.shape[-1], dtype=a_mat.dtype)
    q = None
    for t in range(steps):
        a, b, c = _row(table, t)
        if t > 0:
            a2 = ops.mm(a_mat, a_mat)
        b_mat = b * a_mat + c * a2 + a * eye  # (..., k, k), a polynomial in G
        q = b_mat if q is None else ops.mm(b_mat, q)
        if t < steps - 1:
            a_mat = ops.mm(ops.mm(b_mat, a_mat), b_mat)
            a_mat = 0.5 * (a_mat + jnp.swapaxes(a_mat, -1, -2))
    return ops.apply(r * q, xk)


def _dynamic(ops: _Ops, xk, r, a_mat, a2, table, steps):
    """Direct iteration with a traced step count (e.g. injected by ``optax.inject_hyperparams``)."""
    last = table.shape[0] - 1
    table = jnp.asarray(table, ops.acc)
    a, b, c = table[0]
    y = (a * r) * xk + ops.apply(r * (b * a_mat + c * a2), xk)

    def body(t, y):
        a, b, c = table[jnp.minimum(t, last)]
        g = ops.gram(y)
        return a * y + ops.apply(b * g + c * ops.mm(g, g), y)

    return jax.lax.fori_loop(1, steps, body, y)


def _default_operand_dtype(acc):
    """bfloat16 operands for float32 work on GPU/TPU (float32 accumulation); ``acc`` itself on CPU or for float64."""
    if acc == jnp.float32 and jax.default_backend() != "cpu":
        return jnp.dtype(jnp.bfloat16)
    return acc


def msign(
    x: jax.Array,
    *,
    steps=5,
    coeffs="polar_express_jaxlab",
    dtype=None,
    normalization: str = "power",
    method: str = "auto",
    power_steps: int = 8,
    eps=0.0,
) -> jax.Array:
    """Approximate polar factor ``U V^T`` of ``x = U S V^T`` (the matrix sign).

    Args:
        x: matrices of shape ``(..., m, n)``, batched over leading axes.
        steps: number of quintic iterations (int ``>= 1``). A traced integer (as
            ``optax.inject_hyperparams`` produces) is accepted and runs a
            ``fori_loop`` without the Gram shortcut.
        coeffs: ``"polar_express_jaxlab"`` (the default, alias
            ``"polar_express"``) or ``"polar_express_paper"`` (per-step optimal
            polynomials, see :mod:`jaxlab.linalg.polar_coeffs`), ``"keller"``
            (3.4445, -4.7750, 2.0315 every step), one row ``(a, b, c)`` or a
            table of shape ``(k, 3)`` applied in order, its last row repeating
            past ``k``.
        dtype: matmul operand dtype, e.g. ``jnp.bfloat16`` (accumulation and the
            iterate stay float32). ``None``: float32 on CPU; bfloat16 operands
            with float32 accumulation on GPU/TPU, where bfloat16 matmuls run at
            several times the float32 rate (what Muon implementations use). The
            rounding widens the band: on Gaussian 512x512 inputs, 5 steps,
            ``max |sigma - 1|`` grows from 0.144 to 0.17-0.31 (median
            unchanged; Keller's float32 iteration: 0.32-0.40); a float64 ``x``
            computes in float64 everywhere. An explicit float32
            on GPU/TPU runs at ``jax.default_matmul_precision`` (pass
            ``"highest"`` there for true float32 products). The result is
            returned in ``x.dtype``.
        normalization: ``"power"`` scales by ``POWER_SAFETY`` times a
            ``power_steps``-step power-iteration estimate of ``sigma_1``, kept
            within ``[s8 / max_input, s8]`` of the Schatten-8 norm ``s8``
            (``max_input`` = :func:`jaxlab.linalg.polar_coeffs.max_input` of
            ``coeffs``, see the module docstring); ``"frobenius"`` scales by
            ``|x|_F + eps`` (Keller Jordan's and optax's normalization).
        method: ``"direct"`` iterates on the ``min(m,n) x max(m,n)`` matrix,
            ``"gram"`` on its ``min x min`` Gram factors, ``"auto"`` picks Gram
            when ``max/min >= 1.5``, ``steps`` is static and the compute dtype is
            float32 or float64.
        power_steps: products of ``(x x^T)^2`` with a block of 4 vectors used to
            estimate ``sigma_1`` (cost ``O(min(m,n)^2)`` each).
        eps: scalar ``>= 0`` added to ``|x|_F`` by ``"frobenius"`` normalization
            (Keller Jordan uses ``1e-7``, ``optax.contrib.muon`` ``1e-8``);
            ignored by ``"power"``. May be traced.

    Returns:
        Array of the shape and dtype of ``x``. With the default preset and float32
        operands (the CPU default; bfloat16 widens the band, see ``dtype``), singular
        values ``sigma >= 1e-3 * max(sigma_1, s8 / 1.1)`` (``s8`` the Schatten-8
        norm, within ``rank^(1/8)`` of ``sigma_1`` and close to it unless the top
        of the spectrum is flat) are mapped into ``POLAR_EXPRESS_BANDS[steps - 1]``
        (``|sigma - 1| < 0.145`` after 5 steps); zero singular values stay zero,
        and a zero matrix maps to zeros (never NaN).

    Raises:
        ValueError: for a non-matrix or non-float ``x``, a bad ``steps``,
            ``coeffs``, ``normalization``, ``method``, ``power_steps``, ``dtype``
            or ``eps``.

    References:
        Jordan, "Muon", 2024; Amsel et al., "The Polar Express", 2025.
    """
    x = jnp.asarray(x)
    _validate(x, steps, normalization, method, power_steps, dtype, eps)
    table = coefficient_table(coeffs, "msign: coeffs")
    acc = jnp.promote_types(x.dtype, jnp.float32)
    ops = _Ops(x, jnp.dtype(dtype) if dtype is not None else _default_operand_dtype(acc), acc)
    m, n = sorted(x.shape[-2:])
    xk, r, a_mat, a2 = _normalize(x.astype(acc), ops, normalization, power_steps, max_input(coeffs), eps)
    if not isinstance(steps, int):
        y = _dynamic(ops, xk, r, a_mat, a2, table, steps)
    else:
        use_gram = method == "gram" or (method == "auto" and n >= _GRAM_RATIO * m and steps > 1 and ops.op in (jnp.float32, jnp.float64))
        y = (_gram_iteration if use_gram else _direct)(ops, xk, r, a_mat, a2, table, steps)
    return y.astype(x.dtype)


def msign_svd(x: jax.Array) -> jax.Array:
    """Exact matrix sign ``U V^T`` by SVD, the reference for :func:`msign`.

    Singular values below ``max(m, n) * eps * sigma_1`` are treated as zero (their
    directions map to zero, as for the iterative method), so a zero matrix maps to
    zeros.

    Args:
        x: matrices of shape ``(..., m, n)``.

    Returns:
        ``U diag(s > tol) V^T`` with the shape and dtype of ``x``.

    Raises:
        ValueError: if ``x`` is not at least 2-D.

    References:
        Higham, "Functions of Matrices", SIAM 2008, Theorem 8.1.
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"msign_svd: x must have shape (..., m, n), got shape {x.shape}")
    u, s, vh = jnp.linalg.svd(x, full_matrices=False)
    tol = max(x.shape[-2:]) * jnp.finfo(s.dtype).eps * s[..., :1]
    keep = (s > tol).astype(x.dtype)  # (..., k)
    return jnp.matmul(u * keep[..., None, :], vh, precision=jax.lax.Precision.HIGHEST)
