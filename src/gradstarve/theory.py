"""The dual-space theory of gradient starvation (Sections 3.3-3.5 and Appendices B-C of the paper).

Pure numpy/scipy functions in float64. Nothing here imports torch.

Conventions (paper notation throughout)
---------------------------------------
* ``Y Phi0 = U S V^T`` (Def. 1, Eq. 7). ``U`` has shape ``(n, k)`` with orthonormal columns, ``s`` shape ``(k,)``
  holds the singular values (the feature *strengths*), ``n`` is the number of training examples.
* The network is the linear model of Eq. 5 with ``yhat_0 = 0`` (the paper's derivation of Eqs. 10-15 drops
  ``yhat_0``), so the response is ``r = Y yhat = Y Phi0 theta`` (Eq. 6) and ``z = U^T r = S V^T theta`` (Eq. 8).
* ``lam`` (λ) is normalised against a **sum** over examples, exactly as in Eq. 9 and Eq. 25::

      weight decay (Eq. 9):          L(θ) = Σ_i log(1 + exp(-r_i)) + λ/2 ‖θ‖²
      spectral decoupling (Eq. 25):  L(θ) = Σ_i log(1 + exp(-r_i)) + λ/2 ‖ŷ‖²

  A loss that averages the cross-entropy over ``n`` examples with coefficient λ' corresponds to ``lam = n λ'``.
* ``penalty`` is ``"weight_decay"`` (dual Eqs. 15-17) or ``"spectral_decoupling"`` (dual Eqs. 26-27).
* Both dual flows are ``dα/dt = η (log((1-α)/α) - K α / λ)`` with the *coupling matrix*
  ``K = U diag(w) U^T``: ``w = s²`` under weight decay (``K = Y Phi0 Phi0^T Y``, Eq. 16-17) and ``w = 1`` under
  spectral decoupling. When ``U`` is square (``k = n``) the latter is ``K = I`` and the flow is exactly Eq. 27.
  When ``k < n`` the minimisation over θ in Eq. 13 only reaches responses in ``span(U)``, and the same derivation
  gives ``K = U U^T``; we use that, which reduces to Eq. 27 for ``k = n``.
* At a fixed point ``r* = K α* / λ`` (Eq. 14 inserted in Eq. 6), hence ``z* = S² U^T α* / λ`` under weight decay
  (Eq. 18) and ``z* = U^T α* / λ`` under spectral decoupling.
* ``approx=True`` selects the paper's approximation ``log(1 - α) ≈ -α`` (Eq. 19), i.e. the flow
  ``dα/dt = η (-log α - α - K α / λ)``, which equals Eq. 19 (``-log α - α A`` with ``A = λ⁻¹ U (S² + λ I) U^T``)
  for square ``U``. All of the paper's closed forms (Eqs. 20-22, Thm. 2) solve this approximate flow.

Cost: the fixed-point solver is a damped Newton method on the concave dual objective using the low-rank form
``K = C C^T`` (``C = U diag(√w)``, shape ``(n, k)``): each iteration costs ``O(n k²+ k³)``; it typically
converges in 5-30 iterations. ``integrate_dual`` and ``jacobian_at_fixed_point`` form dense ``(n, n)`` matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.integrate import solve_ivp
from scipy.special import expit, lambertw, log_expit

Penalty = Literal["weight_decay", "spectral_decoupling"]
PENALTIES: tuple[str, ...] = ("weight_decay", "spectral_decoupling")

#: Largest allowed ``max |U^T U - I|`` for ``U`` to count as having orthonormal columns.
ORTHONORMAL_TOL = 1e-8

#: Fixed points are returned only when ``max |dα/dt| / η`` is below this, or at the rounding floor (see
#: :func:`fixed_point`).
RESIDUAL_TOL = 1e-10

#: Componentwise relative residual at which float64 rounding, not the solver, limits the fixed point.
_ROUNDING_FLOOR = 4 * np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FixedPoint:
    """A fixed point of the dual flow.

    Attributes:
        alpha: ``(n,)`` dual variables α*, each in (0, 1) (for the approximate flow of Eq. 19, which has no barrier
            at 1, only α* > 0 holds). By Lemma 2, ``α*_i = σ(-r*_i)``, minus the derivative of
            the cross-entropy with respect to the margin ``r_i``.
        z: ``(k,)`` feature responses z* (Eq. 18 under weight decay, ``U^T α*/λ`` under spectral decoupling).
        residual: ``max_i |dα_i/dt| / η`` at ``alpha`` for the flow that was solved (``nan`` if not computed).
        iterations: Newton iterations used (0 for closed forms).
        scaled_residual: ``max_i |dα_i/dt| / scale_i`` with ``scale_i`` the size of the terms summed in it; float64
            rounding alone makes this about 1e-16 (see :func:`fixed_point`).
    """

    alpha: np.ndarray
    z: np.ndarray
    residual: float = float("nan")
    iterations: int = 0
    scaled_residual: float = float("nan")


@dataclass(frozen=True)
class Trajectory:
    """A path of the learning dynamics in feature-response space.

    Attributes:
        t: ``(T,)`` time stamps: optimisation steps for discrete paths, continuous time for the ODE.
        z: ``(T, k)`` feature responses z(t) (Eq. 8).
        alpha: ``(T, n)`` dual variables along the path (for the primal path: ``σ(-r)``, Lemma 2).
        theta: ``(T, k)`` primal parameters in the basis of ``V`` (primal path only, else ``None``).
    """

    t: np.ndarray
    z: np.ndarray
    alpha: np.ndarray
    theta: np.ndarray | None = None


@dataclass(frozen=True)
class StarvationCurve:
    """Thm. 2: fixed-point responses as the strength of feature 1 grows (``U`` of Eq. 23, ``s = (s1, s2)``).

    Attributes:
        s1: ``(G,)`` the grid of strengths of feature 1.
        z1, z2: ``(G,)`` fixed-point responses to features 1 and 2.
        dz1_ds1sq, dz2_ds1sq: ``(G,)`` their derivatives with respect to ``s1²`` by the implicit-function theorem.
        penalty, delta, s2, lam, approx: the set-up.
    """

    s1: np.ndarray
    z1: np.ndarray
    z2: np.ndarray
    dz1_ds1sq: np.ndarray
    dz2_ds1sq: np.ndarray
    penalty: str
    delta: float
    s2: float
    lam: float
    approx: bool


@dataclass(frozen=True)
class Simulation:
    """App. C / Fig. 6: the same problem solved by three paths, plus the fixed points they should reach.

    Attributes:
        primal: gradient descent on the primal loss (Eq. 9 or Eq. 25) of the linear model, ``t`` in steps.
        dual: gradient ascent on the dual (Eq. 15 or Eq. 26), ``t`` in steps.
        ode: the continuous dual flow (Eq. 17 or Eq. 27) at times ``dual_lr * steps``.
        fixed_point: the exact fixed point (:func:`fixed_point`).
        approx_fixed_point: the paper's closed form where one applies (Eqs. 20-21), else Lemma 1 (Eq. 22) under
            weight decay; under spectral decoupling the exact closed form in ``U^T`` of Eq. 27's approximation.
        approx_method: which formula ``approx_fixed_point`` came from.
        primal_lr, dual_lr: the step sizes used.
    """

    primal: Trajectory
    dual: Trajectory
    ode: Trajectory
    fixed_point: FixedPoint
    approx_fixed_point: FixedPoint
    approx_method: str
    primal_lr: float
    dual_lr: float


# --------------------------------------------------------------------------------------------------------------
# Input validation: every public function checks its inputs and names the offending argument.
# --------------------------------------------------------------------------------------------------------------
def _check_lam(lam: float) -> float:
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a real number > 0 (the regularisation strength λ), got {lam!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"lam must be a finite number > 0 (the regularisation strength λ), got {lam!r}")
    return value


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_penalty(penalty: str) -> str:
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    return penalty


def _check_strengths(s: np.ndarray | Sequence[float]) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"s must be a non-empty 1-D array of singular values, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"s must be finite; got non-finite entries at indices {np.flatnonzero(~np.isfinite(s))}")
    if np.any(s < 0):
        raise ValueError(f"s must be non-negative (singular values); got negative entries {s[s < 0]}")
    return s


def _check_u(U: np.ndarray, s: np.ndarray) -> np.ndarray:
    U = np.asarray(U, dtype=np.float64)
    if U.ndim != 2:
        raise ValueError(f"U must be a 2-D array of shape (n, k), got shape {U.shape}")
    n, k = U.shape
    if k != s.shape[0]:
        raise ValueError(f"shape mismatch: U has k = {k} columns but s has {s.shape[0]} entries; expected equal")
    if k > n:
        raise ValueError(f"U must have at most as many columns as rows (k <= n), got shape {U.shape}")
    if not np.all(np.isfinite(U)):
        raise ValueError("U must be finite; it contains NaN or inf")
    gram_error = float(np.max(np.abs(U.T @ U - np.eye(k))))
    if gram_error > ORTHONORMAL_TOL:
        raise ValueError(
            f"U must have orthonormal columns: max |U^T U - I| = {gram_error:.3g} exceeds the tolerance "
            f"{ORTHONORMAL_TOL:g}"
        )
    return U


def _check_problem(U: np.ndarray, s: np.ndarray | Sequence[float], lam: float, penalty: str):
    s = _check_strengths(s)
    return _check_u(U, s), s, _check_lam(lam), _check_penalty(penalty)


def _check_alpha(
    alpha: np.ndarray | Sequence[float] | float, n: int, name: str = "alpha", approx: bool = False
) -> np.ndarray:
    """Check dual variables: shape (n,), inside (0, 1), or (0, inf) for Eq. 19, which has no barrier at 1."""
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n,)) if np.ndim(alpha) == 0 else alpha
    alpha = np.array(alpha, dtype=np.float64)
    if alpha.shape != (n,):
        raise ValueError(f"shape mismatch: {name} must have shape ({n},) (one entry per example), got {alpha.shape}")
    upper = np.inf if approx else 1.0
    inside = (alpha > 0) & (alpha < upper)
    if not np.all(inside):
        domain = "(0, inf) (the domain of Eq. 19)" if approx else "(0, 1) (the domain of Eq. 17)"
        raise ValueError(f"{name} must lie strictly inside {domain}; got {alpha[~inside][:5]}")
    return alpha


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------
def _kernel_weights(s: np.ndarray, penalty: str) -> np.ndarray:
    """``w`` of the coupling matrix ``K = U diag(w) U^T``: s² (weight decay) or 1 (spectral decoupling)."""
    return s**2 if penalty == "weight_decay" else np.ones_like(s)


def _barrier(alpha: np.ndarray, approx: bool) -> np.ndarray:
    """The entropy term of the dual velocity: ``log((1-α)/α)`` (Eq. 17, 27) or ``-log α - α`` (Eq. 19)."""
    return -np.log(alpha) - alpha if approx else np.log1p(-alpha) - np.log(alpha)


def _barrier_curvature(alpha: np.ndarray, approx: bool) -> np.ndarray:
    """Minus the derivative of :func:`_barrier`: ``1/(α(1-α))`` or ``1/α + 1`` (the diagonal of Eq. 41)."""
    return 1.0 / alpha + 1.0 if approx else 1.0 / (alpha * (1.0 - alpha))


def _response_from_alpha(alpha: np.ndarray, U: np.ndarray, w: np.ndarray, lam: float) -> np.ndarray:
    """``z = diag(w) U^T α / λ`` for a stack of α with shape (..., n)."""
    return (alpha @ U) * w / lam


def coupling_matrix(U: np.ndarray, s: np.ndarray | Sequence[float], penalty: Penalty = "weight_decay") -> np.ndarray:
    """The ``(n, n)`` matrix ``K`` coupling the dual variables.

    ``K = U S² U^T = Y Phi0 Phi0^T Y`` under weight decay (Eq. 16-17) and ``K = U U^T`` under spectral
    decoupling (``= I`` when ``U`` is square, Eq. 27).
    """
    s = _check_strengths(s)
    U = _check_u(U, s)
    w = _kernel_weights(s, _check_penalty(penalty))
    return (U * w) @ U.T


def binary_entropy(alpha: np.ndarray | float) -> np.ndarray:
    """Shannon's binary entropy ``H(α) = -α log α - (1-α) log(1-α)`` in nats (Eq. 11), defined for α in [0, 1]."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if np.any((alpha < 0) | (alpha > 1)) or not np.all(np.isfinite(alpha)):
        raise ValueError("alpha must lie in [0, 1] for the binary entropy (Eq. 11)")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(alpha * np.log(alpha)) - (1 - alpha) * np.log1p(-alpha)
    return np.where((alpha == 0) | (alpha == 1), 0.0, h)


def features(
    phi0: np.ndarray, y: np.ndarray | Sequence[float], k: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of a linearised network: the SVD ``Y Phi0 = U S V^T`` of Def. 1 (Eq. 7).

    Args:
        phi0: ``(n, m)`` neural tangent random feature matrix at initialisation (Eq. 3-4).
        y: ``(n,)`` labels in {-1, +1}.
        k: keep only the ``k`` strongest features (default: all ``min(n, m)``).

    Returns:
        ``(U, s, Vt)`` with shapes ``(n, k)``, ``(k,)`` (descending) and ``(k, m)``. Signs are fixed so that each
        column of ``U`` has a non-negative sum (a feature whose column of ``U`` is all positive is perfectly
        correlated with the labels), which makes the output deterministic.

    Cost: one thin SVD, ``O(n m min(n, m))``.
    """
    phi0 = np.asarray(phi0, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if phi0.ndim != 2:
        raise ValueError(f"phi0 must be a 2-D array of shape (n, m), got shape {phi0.shape}")
    if y.ndim != 1 or y.shape[0] != phi0.shape[0]:
        raise ValueError(f"shape mismatch: y must have shape ({phi0.shape[0]},) to match phi0, got {y.shape}")
    if not np.all(np.isin(y, (-1.0, 1.0))):
        raise ValueError(f"y must contain labels in {{-1, +1}}, got values {np.unique(y)[:10]}")
    if not np.all(np.isfinite(phi0)):
        raise ValueError("phi0 must be finite; it contains NaN or inf")
    rank = min(phi0.shape)
    if k is None:
        k = rank
    if not (isinstance(k, int | np.integer) and 1 <= k <= rank):
        raise ValueError(f"k must be an integer in [1, min(n, m) = {rank}], got {k!r}")
    U, s, Vt = np.linalg.svd(y[:, None] * phi0, full_matrices=False)
    U, s, Vt = U[:, :k], s[:k], Vt[:k]
    signs = np.where(U.sum(axis=0) < 0, -1.0, 1.0)
    return U * signs, s, Vt * signs[:, None]


def dual_velocity(
    alpha: np.ndarray | Sequence[float],
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    eta: float = 1.0,
    approx: bool = False,
) -> np.ndarray:
    """Right-hand side ``dα/dt`` of the dual flow.

    ``approx=False``: Eq. 17 (weight decay) or Eq. 27 (spectral decoupling),
    ``η (log((1-α)/α) - K α / λ)``. ``approx=True``: Eq. 19, ``η (-log α - α - K α / λ)``.

    Args:
        alpha: ``(n,)`` dual variables in (0, 1).
        U: the features (see module docstring).
        s: their strengths.
        lam: λ.
        penalty: ``"weight_decay"`` or ``"spectral_decoupling"``.
        eta: the learning rate η > 0.

    Returns:
        ``(n,)`` velocity. Cost ``O(n k)``.
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    alpha = _check_alpha(alpha, U.shape[0], approx=approx)
    eta = _check_positive("eta", eta)
    w = _kernel_weights(s, penalty)
    return eta * (_barrier(alpha, approx) - U @ (w * (U.T @ alpha)) / lam)


def dual_objective(
    alpha: np.ndarray | Sequence[float],
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    approx: bool = False,
) -> float:
    """The concave dual objective whose gradient ascent is the dual flow.

    ``approx=False``: ``Σ H(α_i) - α^T K α / (2λ)`` (Eq. 15, Eq. 26). At its maximum it equals the minimum of the
    primal loss (Eq. 13), see :func:`primal_loss`.
    ``approx=True``: ``Σ (α_i - α_i log α_i - α_i²/2) - α^T K α / (2λ)``, whose gradient is Eq. 19.
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    alpha = _check_alpha(alpha, U.shape[0], approx=approx)
    w = _kernel_weights(s, penalty)
    quadratic = float(np.sum(w * (U.T @ alpha) ** 2)) / (2 * lam)
    if approx:
        return float(np.sum(alpha - alpha * np.log(alpha) - alpha**2 / 2)) - quadratic
    return float(np.sum(binary_entropy(alpha))) - quadratic


def primal_loss(
    theta: np.ndarray | Sequence[float],
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
) -> float:
    """The primal loss of the linear model, Eq. 9 (weight decay) or Eq. 25 (spectral decoupling).

    The model is ``r = Y Phi0 θ`` with ``Y Phi0 = U S V^T``; ``theta`` is ``(k,)``, the parameters in the basis of
    ``V`` (the component of θ orthogonal to ``V`` does not change ``r`` and is 0 at every minimum).
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != s.shape:
        raise ValueError(f"shape mismatch: theta must have shape {s.shape}, got {theta.shape}")
    r = U @ (s * theta)
    regulariser = theta @ theta if penalty == "weight_decay" else r @ r
    return float(np.sum(-log_expit(r)) + lam / 2 * regulariser)


# --------------------------------------------------------------------------------------------------------------
# Fixed points
# --------------------------------------------------------------------------------------------------------------
class _OutOfRangeError(ArithmeticError):
    def __init__(self, logit: float):
        super().__init__(logit)
        self.logit = logit


#: |logit α| beyond which e^x overflows float64 (≈ 709.8); integrate_dual stops there with a clear error.
_MAX_LOGIT = 700.0


@dataclass(frozen=True)
class _NewtonResult:
    alpha: np.ndarray
    residual: float
    scaled_residual: float
    iterations: int


def _lambert_alpha(c: np.ndarray) -> np.ndarray:
    """Solution of ``-log α = c α`` (c >= 1): ``α = W(c) / c``. This is the scalar case of Eq. 19/21."""
    return np.real(lambertw(c)) / c


def _newton_fixed_point(C: np.ndarray, lam: float, approx: bool, tol: float, max_iter: int) -> _NewtonResult:
    """Damped Newton ascent on the strictly concave dual objective (an interior-point method on (0, 1)^n).

    The Newton direction solves ``(D + C C^T / λ) dα = G`` with ``G`` the velocity (Eq. 17, or Eq. 19) and ``D``
    the diagonal barrier curvature (``1/(α(1-α))``, or ``1/α + 1``), by the Woodbury identity in ``O(n k² + k³)``.
    The step is capped so that no α_i leaves the domain ((0, 1), or α > 0 for Eq. 19) or shrinks by more than a
    factor 100 in one iteration (fraction to the boundary), then backtracked until the objective rises (Armijo) or
    the residual halves.
    Concavity makes every Newton direction an ascent direction, so the method converges from any start.
    """
    k = C.shape[1]
    abs_C = np.abs(C)
    # Start from the uncoupled solution of Eq. 19 (Eq. 21 with the diagonal of K): close to the answer when the
    # coupling is weak, and always inside the domain.
    alpha = np.clip(_lambert_alpha(1.0 + np.einsum("ij,ij->i", C, C) / lam), 1e-300, 0.5)

    def evaluate(a: np.ndarray):
        log_a = np.log(a)
        ca = C.T @ a
        coupling = C @ ca / lam
        if approx:
            barrier = -log_a - a
            objective_terms = a - a * log_a - a**2 / 2
        else:
            log_1ma = np.log1p(-a)
            barrier = log_1ma - log_a
            objective_terms = -a * log_a - (1 - a) * log_1ma  # H(α), Eq. 11
        grad = barrier - coupling
        objective = float(np.sum(objective_terms) - ca @ ca / (2 * lam))
        # Size of the terms that cancel in grad: rounding makes |grad_i| ~ eps * scale_i unavoidable.
        scale = 1.0 + np.abs(barrier) + abs_C @ (abs_C.T @ a) / lam
        return grad, objective, float(np.max(np.abs(grad))), float(np.max(np.abs(grad) / scale))

    grad, objective, residual, scaled = evaluate(alpha)
    iterations = 0
    while iterations < max_iter and residual > tol and scaled > _ROUNDING_FLOOR:
        iterations += 1
        d_inv = alpha / (1.0 + alpha) if approx else alpha * (1.0 - alpha)  # inverse barrier curvature
        dinv_C = d_inv[:, None] * C
        dinv_g = d_inv * grad
        direction = dinv_g - dinv_C @ np.linalg.solve(lam * np.eye(k) + C.T @ dinv_C, C.T @ dinv_g)
        slope = float(grad @ direction)  # > 0: ascent
        with np.errstate(divide="ignore"):
            shrink = np.where(direction < 0, -0.99 * alpha / direction, np.inf)
            # Eq. 19 drops the barrier at α = 1 (log(1-α) ≈ -α), so only the exact flow is capped there.
            grow = np.where(direction > 0, 0.99 * (1.0 - alpha) / direction, np.inf) if not approx else np.inf
        step = min(1.0, float(np.min(shrink)), float(np.min(grow)))
        upper = np.inf if approx else 1.0
        while step > 1e-14:
            candidate_alpha = alpha + step * direction
            if np.all((candidate_alpha > 0) & (candidate_alpha < upper)):
                candidate = evaluate(candidate_alpha)
                if candidate[1] >= objective + 1e-4 * step * slope or candidate[2] < 0.5 * residual:
                    break
            step *= 0.5
        else:
            break  # no ascent possible at working precision: we are at the rounding floor
        alpha = candidate_alpha
        grad, objective, residual, scaled = candidate
    return _NewtonResult(alpha, residual, scaled, iterations)


def fixed_point(
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    approx: bool = False,
    *,
    tol: float = 1e-12,
    max_iter: int = 200,
) -> FixedPoint:
    """The unique fixed point of the dual flow (Eq. 17 / Eq. 27, or Eq. 19 with ``approx=True``).

    The dual objective is strictly concave on (0, 1)^n, so the fixed point is unique and (Thm. 1) attractive.
    The exact fixed point (``approx=False``) is the point primal gradient descent on Eq. 9 / Eq. 25 reaches:
    ``α*_i = σ(-r*_i)`` and ``θ* = Phi0^T Y α* / λ`` (Eq. 14).

    Args:
        U: ``(n, k)`` with orthonormal columns.
        s: ``(k,)`` non-negative strengths (tested up to 1e3).
        lam: λ > 0 (tested from 1e-4 to 1e2), normalised against a sum over examples.
        penalty: ``"weight_decay"`` or ``"spectral_decoupling"``.
        approx: solve the approximate flow of Eq. 19 instead.
        tol: target for ``max |dα/dt|`` (η = 1).

    Returns:
        :class:`FixedPoint` with ``alpha`` ``(n,)``, ``z`` ``(k,)`` and the final residual ``max |dα/dt|``.

    Accuracy: the residual is below ``tol`` unless float64 rounding forbids it. Evaluating ``K α / λ`` loses
    about ``eps · Σ_j |K_ij| α_j / λ``: when a strong feature (large ``s²/λ``) has a column of ``U`` with mixed
    signs, α must be nearly orthogonal to it and those terms cancel, so even the correctly rounded fixed point has
    a residual of about ``1e-16 · s_max² / λ`` (1e-6 at s = 1e3, λ = 1e-4). The solver then stops at that floor,
    where each component of the residual is below ``4 eps`` times the size of the terms that produced it, and
    ``FixedPoint.scaled_residual`` reports that ratio.

    Raises:
        RuntimeError: if the residual is neither below ``RESIDUAL_TOL`` (1e-10) nor at the rounding floor.

    Cost: ``O(n k² + k³)`` per Newton iteration, typically 5-30 iterations.
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    w = _kernel_weights(s, penalty)
    result = _newton_fixed_point(U * np.sqrt(w), lam, approx, tol, max_iter)
    if not (result.residual <= RESIDUAL_TOL or result.scaled_residual <= 16 * _ROUNDING_FLOOR):
        raise RuntimeError(
            f"fixed_point did not converge: residual {result.residual:.3g} > {RESIDUAL_TOL:g} (relative "
            f"{result.scaled_residual:.3g}) after {result.iterations} iterations (lam={lam:g}, max s={s.max():g})"
        )
    z = _response_from_alpha(result.alpha, U, w, lam)
    return FixedPoint(result.alpha, z, result.residual, result.iterations, result.scaled_residual)


def closed_form_fixed_point(
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    U: np.ndarray | None = None,
) -> FixedPoint:
    """Closed-form fixed point of the approximate flow (Eq. 19) with the Lambert W function.

    * ``U = None`` (identity, each feature carried by one example; case 2, Eq. 21)::

          α*_i = λ W(s_i²/λ + 1) / (s_i² + λ),     z*_i = s_i² W(s_i²/λ + 1) / (s_i² + λ)

    * ``U`` square orthogonal with all strengths equal, ``s_i = s`` (case 1, Eq. 20): the same ``α*`` for every
      example and ``z*_j = s² W(s²/λ + 1) / (s² + λ) Σ_i u_ij``.
    * ``penalty="spectral_decoupling"`` with any square ``U``: the flow is uncoupled (Eq. 27), so
      ``α*_i = λ W(1/λ + 1) / (1 + λ)`` for every example and ``z* = U^T α* / λ``; ``s`` plays no role.

    Note on Eq. 20: the paper prints ``W(λ⁻¹ s² + λ)`` in the expression for α*. Solving ``-log α = α (s² + λ)/λ``
    gives ``α = W(c)/c`` with ``c = λ⁻¹ s² + 1``, the argument the paper itself uses for z* in Eq. 20 and in Eq. 21;
    ``fixed_point(approx=True)`` agrees with this form to 1e-10 (tests/test_theory.py) and not with the printed one.

    Distance to the exact fixed point (Eq. 17): the approximation replaces ``log(1-α)`` by ``-α``, an error of
    about ``α²/2`` in the velocity, and ``α* ≈ log(s²/λ)/(s²/λ)`` is small when ``λ ≪ s²``. Measured relative
    error of z* against :func:`fixed_point` for ``U = I``: 3.5% at ``s²/λ = 10``, 0.57% at ``s²/λ = 100``,
    0.06% at ``s²/λ = 10³``, 0.006% at ``s²/λ = 10⁴`` and 12% at ``s²/λ = 1``: the gap falls roughly like
    ``α*`` (pinned in tests/test_theory.py::test_closed_form_gap_to_exact_fixed_point).
    """
    s = _check_strengths(s)
    lam = _check_lam(lam)
    penalty = _check_penalty(penalty)
    if U is not None:
        U = _check_u(U, s)
        if U.shape[0] != U.shape[1]:
            raise ValueError(f"U must be square for a closed form (Eq. 20), got shape {U.shape}")
        if penalty == "weight_decay" and not np.allclose(s, s[0], rtol=1e-12, atol=0):
            raise ValueError(
                "a closed form with a general U needs equal strengths (Eq. 20, case 1) under weight decay; "
                f"got s = {s}. Use fixed_point(..., approx=True) or perturbative_fixed_point instead"
            )
    w = _kernel_weights(s, penalty)
    # In each covered case K is diagonal: diag(w) for U = I, else w_0 I (equal strengths, or I under SD).
    diag_k = w if U is None else np.full(U.shape[0], w[0])
    alpha = _lambert_alpha(diag_k / lam + 1.0)
    U = np.eye(s.shape[0]) if U is None else U
    return FixedPoint(alpha, _response_from_alpha(alpha, U, w, lam), float("nan"), 0)


def perturbative_fixed_point(U: np.ndarray, s: np.ndarray | Sequence[float], lam: float) -> FixedPoint:
    """Lemma 1 (Eq. 22): first-order approximation of the Eq. 19 fixed point for weakly coupled features.

    ``α̃* = [A + diag(1/α*)]⁻¹ (1 - log α*)`` with ``A = I + U S² U^T / λ`` (``= λ⁻¹ U (S² + λ I) U^T`` for square
    ``U``) and ``α*_i = W(A_ii) / A_ii`` the fixed point with the off-diagonal part of ``A`` removed (Eq. 45).
    It linearises ``-log α`` around ``α*``, so its error against ``fixed_point(approx=True)`` is second order in
    the coupling δ of Assumption 1. Weight decay only (under spectral decoupling there is nothing to perturb).

    Returns:
        :class:`FixedPoint` with ``z = S² U^T α̃* / λ`` (Eq. 50) and the residual of the Eq. 19 flow at α̃*.
    """
    U, s, lam, _ = _check_problem(U, s, lam, "weight_decay")
    A = np.eye(U.shape[0]) + (U * s**2) @ U.T / lam
    alpha_unperturbed = _lambert_alpha(np.diag(A).copy())
    alpha = np.linalg.solve(A + np.diag(1.0 / alpha_unperturbed), 1.0 - np.log(alpha_unperturbed))
    if not np.all((alpha > 0) & (alpha < 1)):
        raise ValueError(
            "Lemma 1 does not apply: the coupling is too strong and the perturbative α leaves (0, 1); "
            "use fixed_point(..., approx=True)"
        )
    residual = float(np.max(np.abs(dual_velocity(alpha, U, s, lam, approx=True))))
    return FixedPoint(alpha, _response_from_alpha(alpha, U, s**2, lam), residual, 0)


def lemma1_applies(U: np.ndarray, s: np.ndarray | Sequence[float], lam: float) -> bool:
    """Whether Lemma 1's perturbative α̃* lies in (0, 1), i.e. :func:`perturbative_fixed_point` is defined. It fails
    for strong features (large s²/λ) at moderate coupling, where its first-order expansion of ``-log α`` breaks."""
    try:
        perturbative_fixed_point(U, s, lam)
    except ValueError:
        return False
    return True


def coupled_pair(delta: float) -> np.ndarray:
    """The 2 x 2 coupling of Eq. 23: ``U = [[√(1-δ²), -δ], [δ, √(1-δ²)]]`` for δ in [0, 1]."""
    delta = float(delta)
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must lie in [0, 1] (Eq. 23), got {delta!r}")
    c = np.sqrt(1.0 - delta**2)
    return np.array([[c, -delta], [delta, c]])


# --------------------------------------------------------------------------------------------------------------
# Jacobian and Thm. 1
# --------------------------------------------------------------------------------------------------------------
def _jacobian(alpha: np.ndarray, U: np.ndarray, w: np.ndarray, lam: float, eta: float, approx: bool) -> np.ndarray:
    return -eta * (np.diag(_barrier_curvature(alpha, approx)) + (U * w) @ U.T / lam)


def jacobian_at_fixed_point(
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    eta: float = 1.0,
    approx: bool = False,
    alpha: np.ndarray | None = None,
) -> np.ndarray:
    """Jacobian ``∂(dα/dt)/∂α`` of the dual flow at its fixed point (Eq. 40-41; Eq. 19's flow with ``approx``).

    ``J = -η (diag(1/(α*(1-α*))) + K/λ)`` (Eq. 41), or ``-η (diag(1/α* + 1) + K/λ)`` for Eq. 19. Pass ``alpha`` to
    evaluate it elsewhere. Returns an ``(n, n)`` symmetric matrix. Cost ``O(n² k)``.
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    eta = _check_positive("eta", eta)
    if alpha is None:
        alpha = fixed_point(U, s, lam, penalty, approx).alpha
    alpha = _check_alpha(alpha, U.shape[0], approx=approx)
    return _jacobian(alpha, U, _kernel_weights(s, penalty), lam, eta, approx)


def is_attractive(
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    approx: bool = False,
) -> bool:
    """Thm. 1: whether every eigenvalue of the flow's Jacobian at the fixed point is negative."""
    J = jacobian_at_fixed_point(U, s, lam, penalty, 1.0, approx)
    return bool(np.max(np.linalg.eigvalsh(J)) < 0)


# --------------------------------------------------------------------------------------------------------------
# Thm. 2
# --------------------------------------------------------------------------------------------------------------
def starvation_curve(
    delta: float,
    s1_grid: np.ndarray | Sequence[float],
    s2: float,
    lam: float,
    penalty: Penalty = "weight_decay",
    approx: bool = False,
) -> StarvationCurve:
    """Thm. 2: how the fixed-point response to feature 2 changes as feature 1 gets stronger.

    Set-up: two examples, two features, ``U`` of Eq. 23 with coupling ``delta``, ``s = (s1, s2)`` for each ``s1``
    in ``s1_grid``. Returns z1*, z2* of the exact flow (or of Eq. 19 with ``approx=True``) and the derivatives
    ``dz*/d(s1²)`` from the implicit-function theorem: with ``F(α, p) = 0`` the fixed-point equation and
    ``p = s1²``, ``dα/dp = -J⁻¹ ∂F/∂p`` where ``J`` is Eq. 41 and ``∂F/∂p = -u1 u1^T α / λ`` (``u1`` the first column
    of ``U``), then ``z = diag(w) U^T α / λ`` is differentiated by the product rule.

    Under weight decay ``dz2*/ds1² < 0`` (Eq. 24); under spectral decoupling ``α*`` and so ``z*`` do not depend
    on ``s`` at all (Eq. 27) and the derivative is exactly 0.
    """
    s1_grid = _check_strengths(s1_grid)
    s2 = float(_check_strengths([s2])[0])
    lam = _check_lam(lam)
    penalty = _check_penalty(penalty)
    U = coupled_pair(delta)
    u1 = U[:, 0]
    z1, z2, dz1, dz2 = (np.empty_like(s1_grid) for _ in range(4))
    for i, s1 in enumerate(s1_grid):
        s = np.array([s1, s2])
        fp = fixed_point(U, s, lam, penalty, approx)
        w = _kernel_weights(s, penalty)
        if penalty == "weight_decay":
            J = _jacobian(fp.alpha, U, w, lam, 1.0, approx)
            dF_dp = -u1 * (u1 @ fp.alpha) / lam
            dalpha = -np.linalg.solve(J, dF_dp)
            dw = np.array([1.0, 0.0])  # d(s²)/d(s1²)
        else:
            dalpha = np.zeros(2)
            dw = np.zeros(2)
        dz = (dw * (U.T @ fp.alpha) + w * (U.T @ dalpha)) / lam
        z1[i], z2[i] = fp.z
        dz1[i], dz2[i] = dz
    return StarvationCurve(s1_grid, z1, z2, dz1, dz2, penalty, float(delta), s2, lam, approx)


# --------------------------------------------------------------------------------------------------------------
# Dynamics: the ODE, dual gradient ascent, primal gradient descent (App. C)
# --------------------------------------------------------------------------------------------------------------
def integrate_dual(
    alpha0: np.ndarray | Sequence[float] | float,
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    t: np.ndarray | Sequence[float] = (0.0, 1.0),
    eta: float = 1.0,
    approx: bool = False,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    method: str = "LSODA",
) -> Trajectory:
    """Integrate the dual flow (Eq. 17 / Eq. 27, or Eq. 19) with ``scipy.integrate.solve_ivp``.

    The flow is stiff (its Jacobian has eigenvalues down to ``-1/α - s_max²/λ``), so it uses an implicit method
    (LSODA, which switches to BDF when stiff; ``method="Radau"`` also works) with the analytic Jacobian (Eq. 41),
    in the coordinates ``logit α`` (``log α`` for Eq. 19) so that α cannot leave its domain. ``rtol``/``atol``
    apply to those coordinates.

    Args:
        alpha0: ``(n,)`` (or a scalar for all examples) initial dual variables in (0, 1).
        t: increasing times ``>= 0`` at which to report; integration runs from 0 to ``t[-1]``.
        eta: learning rate η (time is measured in units of ``1/η``).

    Returns:
        :class:`Trajectory` with ``z`` from Eq. 18 (or ``U^T α / λ`` under spectral decoupling).
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    n = U.shape[0]
    alpha0 = _check_alpha(alpha0, n, "alpha0", approx=approx)
    eta = _check_positive("eta", eta)
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or t[0] < 0 or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(t)):
        raise ValueError("t must be a non-empty, strictly increasing 1-D array of finite times >= 0")
    w = _kernel_weights(s, penalty)
    K = (U * w) @ U.T / lam

    # Integrate in x = logit α (log α for Eq. 19, whose domain is α > 0): an exact change of variables that keeps α
    # inside its domain by construction. With g = dα/dx, dx/dt = F(α) / g and its Jacobian follows by the chain
    # rule from Eq. 41.
    def unpack(x: np.ndarray):
        if np.max(np.abs(x)) > _MAX_LOGIT:
            raise _OutOfRangeError(float(np.min(x)))
        a = np.exp(x) if approx else expit(x)
        one_minus_a = expit(-x)  # exact even where α rounds to 1
        g = a if approx else a * one_minus_a
        dg = a if approx else g * (one_minus_a - a)
        barrier = -x - a if approx else -x  # log((1-α)/α) = -x
        return a, g, dg, eta * (barrier - K @ a)

    def velocity(_time: float, x: np.ndarray) -> np.ndarray:
        _, g, _, f = unpack(x)
        return f / g

    def jacobian(_time: float, x: np.ndarray) -> np.ndarray:
        a, g, dg, f = unpack(x)
        diagonal = 1.0 / a + 1.0 if approx else 1.0 / g
        J_alpha = -eta * (np.diag(diagonal) + K)
        return J_alpha * (g[None, :] / g[:, None]) - np.diag(f * dg / g**2)

    x0 = np.log(alpha0) if approx else np.log(alpha0) - np.log1p(-alpha0)
    if t[-1] == 0:
        alpha = alpha0[None, :]
    else:
        try:
            sol = solve_ivp(
                velocity, (0.0, float(t[-1])), x0, method=method, t_eval=t, jac=jacobian, rtol=rtol, atol=atol
            )
        except _OutOfRangeError as error:
            raise RuntimeError(
                f"integrate_dual: from this alpha0 the flow drives some α below exp({error.logit:.0f}), outside "
                "float64's range (the coupling K α0 / λ is far larger than the barrier). Start closer to the fixed "
                "point (e.g. alpha0 <= 1e-3), or use a larger lam"
            ) from None
        if not sol.success:
            raise RuntimeError(f"integrate_dual failed: {sol.message}")
        alpha = np.exp(sol.y.T) if approx else expit(sol.y.T)
    return Trajectory(t=t, z=_response_from_alpha(alpha, U, w, lam), alpha=alpha)


def dual_ascent(
    alpha0: np.ndarray | Sequence[float] | float,
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    lr: float | None = None,
    n_steps: int = 5000,
    approx: bool = False,
) -> Trajectory:
    """Discrete gradient ascent on the dual objective (Eq. 15 / Eq. 26): ``α ← α + lr · dα/dt`` (Euler on Eq. 17).

    Steps that would leave (0, 1) are clipped back inside (as in the paper's released code), which only happens
    when ``lr`` is too large near the barrier.

    Args:
        lr: step size; default ``1 / L`` with ``L = max|eig J|`` at the fixed point (Eq. 41), the curvature that
            bounds a stable Euler step there.

    Returns:
        :class:`Trajectory` with ``t = 0..n_steps`` (steps).
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    n = U.shape[0]
    alpha = _check_alpha(alpha0, n, "alpha0", approx=approx)
    if lr is None:
        lr = default_dual_lr(U, s, lam, penalty, approx)
    lr = _check_positive("lr", lr)
    n_steps = _check_steps(n_steps)
    w = _kernel_weights(s, penalty)
    K = (U * w) @ U.T / lam
    path = np.empty((n_steps + 1, n))
    path[0] = alpha
    lowest = np.finfo(np.float64).tiny
    highest = np.inf if approx else 1.0 - np.finfo(np.float64).epsneg  # Eq. 19 has no barrier at 1
    for step in range(1, n_steps + 1):
        alpha = np.clip(alpha + lr * (_barrier(alpha, approx) - K @ alpha), lowest, highest)
        path[step] = alpha
    return Trajectory(t=np.arange(n_steps + 1, dtype=np.float64), z=_response_from_alpha(path, U, w, lam), alpha=path)


def default_dual_lr(
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    approx=False,
) -> float:
    """``1 / max|eig J|`` at the fixed point (Eq. 41): a stable Euler step for :func:`dual_ascent`."""
    J = jacobian_at_fixed_point(U, s, lam, penalty, 1.0, approx)
    return float(1.0 / np.max(np.abs(np.linalg.eigvalsh(J))))


def default_primal_lr(s: np.ndarray | Sequence[float], lam: float, penalty: Penalty = "weight_decay") -> float:
    """``1 / L`` with ``L`` an upper bound on the primal Hessian's largest eigenvalue.

    The cross-entropy's curvature is at most 1/4, so ``L = s_max²/4 + λ`` (Eq. 9) or ``s_max² (1/4 + λ)`` (Eq. 25).
    """
    s = _check_strengths(s)
    lam = _check_lam(lam)
    smax2 = float(np.max(s) ** 2)
    bound = smax2 / 4 + lam if _check_penalty(penalty) == "weight_decay" else smax2 * (0.25 + lam)
    return 1.0 / bound


def _check_steps(n_steps: int) -> int:
    if not isinstance(n_steps, int | np.integer) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    return int(n_steps)


def primal_descent(
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    lr: float | None = None,
    n_steps: int = 5000,
    theta0: np.ndarray | Sequence[float] | None = None,
) -> Trajectory:
    """Full-batch gradient descent on the primal loss of the linear model (Eq. 9 or Eq. 25).

    The model is Eq. 5 with ``Y Phi0 = U S V^T``; θ is kept in the basis of ``V`` (shape ``(k,)``), so
    ``r = U S θ`` and ``z = S θ`` (Eq. 8). Gradient: ``S U^T (-σ(-r)) + λ θ`` (weight decay) or
    ``S U^T (-σ(-r) + λ r)`` (spectral decoupling).

    Args:
        lr: step size; default :func:`default_primal_lr` (``1/L``).
        theta0: ``(k,)`` start, default 0 (the network at initialisation, ``r = 0``).

    Returns:
        :class:`Trajectory` with ``t = 0..n_steps``, ``theta`` ``(T, k)`` and ``alpha = σ(-r)`` (Lemma 2), which at
        convergence is the dual fixed point.
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    if lr is None:
        lr = default_primal_lr(s, lam, penalty)
    lr = _check_positive("lr", lr)
    n_steps = _check_steps(n_steps)
    theta = np.zeros_like(s) if theta0 is None else np.array(theta0, dtype=np.float64)
    if theta.shape != s.shape:
        raise ValueError(f"shape mismatch: theta0 must have shape {s.shape}, got {theta.shape}")
    thetas = np.empty((n_steps + 1, s.shape[0]))
    thetas[0] = theta
    US = U * s
    for step in range(1, n_steps + 1):
        r = US @ theta
        dloss_dr = -expit(-r)
        # Eq. 9: λθ from ‖θ‖²; Eq. 25: λ r from ‖ŷ‖² = ‖r‖² (labels ±1), back-propagated through r = U S θ.
        grad = US.T @ dloss_dr + lam * theta if penalty == "weight_decay" else US.T @ (dloss_dr + lam * r)
        theta = theta - lr * grad
        thetas[step] = theta
    alphas = expit(-(thetas @ US.T))
    return Trajectory(t=np.arange(n_steps + 1, dtype=np.float64), z=thetas * s, alpha=alphas, theta=thetas)


def simulate(
    U: np.ndarray,
    s: np.ndarray | Sequence[float],
    lam: float,
    penalty: Penalty = "weight_decay",
    *,
    n_steps: int = 5000,
    primal_lr: float | None = None,
    dual_lr: float | None = None,
    alpha0: float | np.ndarray = 1e-6,
) -> Simulation:
    """App. C / Fig. 6: primal gradient descent, dual gradient ascent and the dual ODE side by side.

    The primal path starts at θ = 0 (z = 0); the dual paths start at ``alpha0`` (default 1e-6, so that
    ``z(0) ≈ 0`` too). The ODE is reported at times ``dual_lr * step``, so dual ascent is its explicit Euler
    discretisation on the same clock. All three must end at :func:`fixed_point`; the paper's own approximation
    (closed form where one applies, else Lemma 1) is returned beside it.

    Returns:
        :class:`Simulation`. Cost: ``O(n_steps (n k + n²))``.
    """
    U, s, lam, penalty = _check_problem(U, s, lam, penalty)
    exact = fixed_point(U, s, lam, penalty)
    if dual_lr is None:
        dual_lr = default_dual_lr(U, s, lam, penalty)
    if primal_lr is None:
        primal_lr = default_primal_lr(s, lam, penalty)
    with np.errstate(over="ignore", invalid="ignore"):  # a divergent path is reported just below, by name
        primal = primal_descent(U, s, lam, penalty, lr=primal_lr, n_steps=n_steps)
        dual = dual_ascent(alpha0, U, s, lam, penalty, lr=dual_lr, n_steps=n_steps)
    for name, path, lr, default in (
        ("primal gradient descent", primal, primal_lr, default_primal_lr(s, lam, penalty)),
        ("dual gradient ascent", dual, dual_lr, default_dual_lr(U, s, lam, penalty)),
    ):
        finite = np.isfinite(path.z).all(axis=1)
        if not finite.all():
            raise ValueError(
                f"{name} diverged: z(t) left the finite range at step {int(path.t[np.argmin(finite)])} with "
                f"learning rate {lr:g}; use a smaller one (the default for this problem is {default:.3g})"
            )
    ode = integrate_dual(alpha0, U, s, lam, penalty, t=dual.t * dual_lr)
    square = U.shape[0] == U.shape[1]
    if penalty == "spectral_decoupling" and square:
        approx_fp, method = closed_form_fixed_point(s, lam, penalty, U=U), "closed form (Eq. 27)"
    elif penalty == "weight_decay" and square and np.allclose(s, s[0], rtol=1e-12, atol=0):
        approx_fp, method = closed_form_fixed_point(s, lam, penalty, U=U), "closed form (Eq. 20)"
    elif penalty == "weight_decay" and lemma1_applies(U, s, lam):
        approx_fp, method = perturbative_fixed_point(U, s, lam), "Lemma 1 (Eq. 22)"
    elif penalty == "weight_decay":  # strong features: Lemma 1's linearisation leaves (0, 1)
        approx_fp = fixed_point(U, s, lam, penalty, approx=True)
        method = "Eq. 19 solved numerically (Lemma 1 does not apply: the coupling is too strong)"
    else:
        approx_fp, method = fixed_point(U, s, lam, penalty, approx=True), "Eq. 19 solved numerically"
    return Simulation(primal, dual, ode, exact, approx_fp, method, float(primal_lr), float(dual_lr))


# --------------------------------------------------------------------------------------------------------------
# Table 4: Legendre duals of margin losses
# --------------------------------------------------------------------------------------------------------------
MARGIN_LOSSES: tuple[str, ...] = ("cross_entropy", "hinge", "squared")


def _check_loss(loss: str) -> str:
    if loss not in MARGIN_LOSSES:
        raise ValueError(f"loss must be one of {MARGIN_LOSSES}, got {loss!r}")
    return loss


def margin_loss(loss: str, omega: np.ndarray | float) -> np.ndarray:
    """Primal forms of Table 4 as functions of the margin ``ω = y ŷ``.

    ``cross_entropy``: ``log(1 + e^{-ω})``; ``hinge``: ``max(0, 1 - ω)``; ``squared``: ``(1 - ω)² / 2``. Table 4
    prints ``(1 - ω)²`` for the squared error, but its dual form ``max_α [-α²/2 + α - αω]`` equals
    ``(1 - ω)²/2``; we use the halved loss so that the pair is exact.
    """
    omega = np.asarray(omega, dtype=np.float64)
    loss = _check_loss(loss)
    if loss == "cross_entropy":
        return -log_expit(omega)
    if loss == "hinge":
        return np.maximum(0.0, 1.0 - omega)
    return (1.0 - omega) ** 2 / 2


def legendre_bound(loss: str, alpha: np.ndarray | float, omega: np.ndarray | float) -> np.ndarray:
    """The Table 4 lower bound ``g(α) - α ω`` whose maximum over α is :func:`margin_loss` (Eq. 29, Eq. 38).

    ``g`` is ``H(α)`` on [0, 1] (cross-entropy, Eq. 37), ``α`` on [0, 1] (hinge) and ``α - α²/2`` on R (squared).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    omega = np.asarray(omega, dtype=np.float64)
    loss = _check_loss(loss)
    if loss in ("cross_entropy", "hinge") and np.any((alpha < 0) | (alpha > 1)):
        raise ValueError(f"alpha must lie in [0, 1] for the {loss} dual (Table 4)")
    if loss == "cross_entropy":
        return binary_entropy(alpha) - alpha * omega
    if loss == "hinge":
        return alpha - alpha * omega
    return alpha - alpha**2 / 2 - alpha * omega


def optimal_dual_variable(loss: str, omega: np.ndarray | float) -> np.ndarray:
    """``argmax_α`` of :func:`legendre_bound`: ``σ(-ω)`` for cross-entropy (Lemma 2, ``α* = -dL/dω``), ``1[ω < 1]``
    for the hinge loss and ``1 - ω`` for the squared loss."""
    omega = np.asarray(omega, dtype=np.float64)
    loss = _check_loss(loss)
    if loss == "cross_entropy":
        return expit(-omega)
    if loss == "hinge":
        return (omega < 1).astype(np.float64)
    return 1.0 - omega
