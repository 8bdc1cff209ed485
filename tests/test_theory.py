"""Tests of gradstarve.theory against independent references: scipy's ODE solver, primal gradient descent, finite
differences, strong duality and the paper's closed forms. Every tolerance is stated where it is used."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar
from scipy.special import expit

from gradstarve import theory

PENALTIES = theory.PENALTIES


def random_problem(rng: np.random.Generator, n: int, k: int, s_max: float) -> tuple[np.ndarray, np.ndarray]:
    """A random ``U`` (n, k) with orthonormal columns and strengths in [0, s_max], descending."""
    U, _ = np.linalg.qr(rng.normal(size=(n, k)))
    return U, np.sort(rng.uniform(0.0, s_max, size=k))[::-1]


# ------------------------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("lam", [1e-4, 1e-2, 1.0, 1e2])
@pytest.mark.parametrize("s_scale", [0.1, 1.0, 3.0, 30.0, 1e3])
def test_closed_form_equals_approximate_fixed_point_for_identity_u(penalty, lam, s_scale):
    s = s_scale * np.array([1.0, 0.5, 0.1])
    closed = theory.closed_form_fixed_point(s, lam, penalty)
    solved = theory.fixed_point(np.eye(3), s, lam, penalty, approx=True)
    np.testing.assert_allclose(closed.alpha, solved.alpha, rtol=1e-10, atol=0)
    np.testing.assert_allclose(closed.z, solved.z, rtol=1e-10, atol=0)


def test_eq20_printed_lambert_argument_is_a_typo():
    """Eq. 20 prints W(s²/λ + λ) for α*; only W(s²/λ + 1) (Eq. 21's argument) solves Eq. 19."""
    from scipy.special import lambertw

    s, lam = 3.0, 0.05
    solved = theory.fixed_point(np.eye(1), [s], lam, approx=True).alpha[0]
    ours = lam * np.real(lambertw(s**2 / lam + 1)) / (s**2 + lam)
    printed = lam * np.real(lambertw(s**2 / lam + lam)) / (s**2 + lam)
    assert ours == pytest.approx(solved, rel=1e-12)
    assert abs(printed / solved - 1) > 1e-3  # off by 0.2% here; it would only agree for λ = 1


def test_equal_strength_closed_form_with_coupled_u_eq20():
    U = theory.coupled_pair(0.3)
    closed = theory.closed_form_fixed_point([2.5, 2.5], 0.1, U=U)
    solved = theory.fixed_point(U, [2.5, 2.5], 0.1, approx=True)
    np.testing.assert_allclose(closed.alpha, solved.alpha, rtol=1e-10)
    np.testing.assert_allclose(closed.z, solved.z, rtol=1e-10)
    # Eq. 20: z_j* = s² W(s²/λ + 1)/(s² + λ) Σ_i u_ij
    from scipy.special import lambertw

    factor = 2.5**2 * np.real(lambertw(2.5**2 / 0.1 + 1)) / (2.5**2 + 0.1)
    np.testing.assert_allclose(closed.z, factor * U.sum(axis=0), rtol=1e-12)


def test_spectral_decoupling_closed_form_holds_for_any_square_u():
    rng = np.random.default_rng(3)
    U, s = random_problem(rng, 6, 6, 5.0)
    closed = theory.closed_form_fixed_point(s, 0.2, "spectral_decoupling", U=U)
    solved = theory.fixed_point(U, s, 0.2, "spectral_decoupling", approx=True)
    np.testing.assert_allclose(closed.alpha, solved.alpha, rtol=1e-10)
    np.testing.assert_allclose(closed.z, solved.z, rtol=1e-10, atol=1e-14)


def test_closed_form_with_unequal_strengths_and_coupled_u_is_refused():
    with pytest.raises(ValueError, match="equal strengths"):
        theory.closed_form_fixed_point([3.0, 2.0], 0.1, U=theory.coupled_pair(0.2))


@pytest.mark.parametrize(
    ("ratio", "measured_gap"),
    # Relative error of the closed-form z* (Eq. 21) against the exact fixed point (Eq. 17), U = I, measured once
    # and pinned here to 1% of its value; documented in closed_form_fixed_point.
    [(1.0, 6.294502e-2), (10.0, 5.36815e-3), (100.0, 1.31400e-4), (1e3, 2.20853e-6), (1e4, 3.17760e-8)],
)
def test_closed_form_gap_to_exact_fixed_point(ratio, measured_gap):
    for lam in (1e-3, 1.0):
        s = np.sqrt(ratio * lam)
        closed = theory.closed_form_fixed_point([s], lam)
        exact = theory.fixed_point(np.eye(1), [s], lam)
        gap = closed.z[0] / exact.z[0] - 1
        assert gap == pytest.approx(measured_gap, rel=1e-2)


# --------------------------------------------------------------------------------------------- fixed_point itself
@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("approx", [False, True])
def test_fixed_point_is_robust_over_lam_and_strength_ranges(penalty, approx):
    """λ from 1e-4 to 1e2, s up to 1e3, square and tall U: a finite answer at residual <= 1e-10 or, where float64
    cannot do better (see fixed_point's docstring), at the rounding floor (relative residual <= 64 eps)."""
    rng = np.random.default_rng(0)
    for n, k in [(1, 1), (2, 2), (5, 3), (40, 40), (200, 10)]:
        for lam in (1e-4, 1e-2, 1.0, 1e2):
            for s_max in (1e-2, 1.0, 1e3):
                U, s = random_problem(rng, n, k, s_max)
                point = theory.fixed_point(U, s, lam, penalty, approx)
                assert np.all(np.isfinite(point.alpha)) and np.all(point.alpha > 0)
                assert approx or np.all(point.alpha < 1)
                assert np.all(np.isfinite(point.z))
                assert point.residual <= 1e-10 or point.scaled_residual <= 64 * np.finfo(float).eps
                velocity = theory.dual_velocity(point.alpha, U, s, lam, penalty, approx=approx)
                # an independent evaluation of Eq. 17 / 19 agrees up to its own rounding
                assert np.max(np.abs(velocity)) <= max(1e-10, 4 * point.residual)


def test_fixed_point_residual_is_below_1e10_for_coupled_pairs_over_the_full_range():
    for delta in (0.0, 0.1, 0.6):
        for lam in (1e-4, 1e-2, 1.0, 1e2):
            for s1 in (1e-3, 1.0, 30.0, 1e3):
                point = theory.fixed_point(theory.coupled_pair(delta), [s1, 1.0], lam)
                assert point.residual <= 1e-10


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    log_lam=st.floats(-4, 2),
    log_s=st.floats(-2, 3),
    penalty=st.sampled_from(PENALTIES),
)
def test_fixed_point_is_a_zero_of_the_velocity_and_maximises_the_dual(n, seed, log_lam, log_s, penalty):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, n + 1))
    U, s = random_problem(rng, n, k, 10**log_s)
    lam = 10**log_lam
    point = theory.fixed_point(U, s, lam, penalty)
    assert point.residual <= 1e-10 or point.scaled_residual <= 64 * np.finfo(float).eps
    # Concavity (Eq. 15 / 26): any feasible perturbation lowers the dual objective.
    best = theory.dual_objective(point.alpha, U, s, lam, penalty)
    for _ in range(5):
        other = np.clip(point.alpha * np.exp(rng.normal(scale=0.05, size=n)), 1e-300, 1 - 1e-12)
        assert theory.dual_objective(other, U, s, lam, penalty) <= best + 1e-9 * max(1.0, abs(best))


@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("approx", [False, True])
def test_fixed_point_equals_long_ode_integration_from_several_starts(penalty, approx):
    rng = np.random.default_rng(1)
    for n, k, s_max, lam in [(2, 2, 2.0, 0.1), (5, 3, 1.5, 0.5), (8, 8, 1.0, 1.0)]:
        U, s = random_problem(rng, n, k, s_max)
        point = theory.fixed_point(U, s, lam, penalty, approx)
        for alpha0 in (1e-6, 0.05, 0.3, rng.uniform(0.01, 0.6, size=n)):
            path = theory.integrate_dual(alpha0, U, s, lam, penalty, t=[0.0, 1.0, 60.0], approx=approx)
            np.testing.assert_allclose(path.alpha[-1], point.alpha, rtol=1e-6, atol=0)
            np.testing.assert_allclose(path.z[-1], point.z, rtol=1e-6, atol=1e-12)


def test_integrate_dual_matches_eq21_closed_form_trajectory_limits_and_starts_at_alpha0():
    path = theory.integrate_dual(0.25, np.eye(2), [1.0, 2.0], 0.5, t=np.linspace(0, 30, 7))
    np.testing.assert_allclose(path.alpha[0], [0.25, 0.25], rtol=1e-12)
    assert path.alpha.shape == (7, 2) and path.z.shape == (7, 2)
    np.testing.assert_allclose(path.alpha[-1], theory.fixed_point(np.eye(2), [1.0, 2.0], 0.5).alpha, rtol=1e-8)


def test_integrate_dual_reports_a_flow_that_leaves_float64_clearly():
    with pytest.raises(RuntimeError, match="outside float64's range"):
        theory.integrate_dual(0.9, theory.coupled_pair(0.6), [10.0, 2.0], 1e-3, t=[0.0, 10.0])


@pytest.mark.parametrize("penalty", PENALTIES)
def test_fixed_point_equals_primal_gradient_descent_through_eq14(penalty):
    """Primal GD on Eq. 9 / Eq. 25 of the linear model ends where the dual fixed point says: α = σ(-r) (Lemma 2),
    θ* = Phi0^T Y α*/λ (Eq. 14, weight decay), z = S θ (Eq. 8). Tolerance 1e-4 (GD's convergence, not the
    solver's)."""
    rng = np.random.default_rng(2)
    for n, k, lam in [(2, 2, 0.3), (6, 4, 0.5), (10, 10, 1.0)]:
        U, s = random_problem(rng, n, k, 2.0)
        s = s + 0.2  # keep every feature learnable so GD converges in 20k steps
        point = theory.fixed_point(U, s, lam, penalty)
        primal = theory.primal_descent(U, s, lam, penalty, n_steps=20_000)
        np.testing.assert_allclose(primal.alpha[-1], point.alpha, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(primal.z[-1], point.z, rtol=1e-4, atol=1e-8)
        if penalty == "weight_decay":  # Eq. 14 in the basis of V: θ* = S U^T α* / λ
            np.testing.assert_allclose(primal.theta[-1], s * (U.T @ point.alpha) / lam, rtol=1e-4, atol=1e-8)
        else:  # with SD the response is r* = U U^T α* / λ, which is α*/λ per example when U is square
            r = U @ (s * primal.theta[-1])
            np.testing.assert_allclose(r, U @ (U.T @ point.alpha) / lam, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_strong_duality_min_primal_equals_max_dual(penalty):
    """Eq. 13: the minimum of the primal loss equals the maximum of the dual objective (Eq. 15 / 26)."""
    rng = np.random.default_rng(4)
    U, s = random_problem(rng, 4, 4, 2.0)
    lam = 0.4
    point = theory.fixed_point(U, s, lam, penalty)
    theta = theory.primal_descent(U, s, lam, penalty, n_steps=30_000).theta[-1]
    primal = theory.primal_loss(theta, U, s, lam, penalty)
    dual = theory.dual_objective(point.alpha, U, s, lam, penalty)
    assert primal == pytest.approx(dual, rel=1e-9)


def test_spectral_decoupling_square_u_is_exactly_eq27():
    rng = np.random.default_rng(5)
    U, s = random_problem(rng, 5, 5, 3.0)
    alpha = rng.uniform(0.05, 0.9, size=5)
    lam = 0.3
    eq27 = np.log(1 - alpha) - np.log(alpha) - alpha / lam
    np.testing.assert_allclose(theory.dual_velocity(alpha, U, s, lam, "spectral_decoupling"), eq27, rtol=1e-12)
    eq19_sd = -np.log(alpha) - alpha - alpha / lam
    np.testing.assert_allclose(
        theory.dual_velocity(alpha, U, s, lam, "spectral_decoupling", approx=True), eq19_sd, rtol=1e-12
    )


def test_weight_decay_velocity_is_eq17_with_ntk_gram():
    """Eq. 16 with the Gram Y Phi0 Phi0^T Y equals Eq. 17 with U S² U^T, for an explicit Phi0 and labels."""
    rng = np.random.default_rng(6)
    phi0 = rng.normal(size=(5, 9))
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    U, s, _ = theory.features(phi0, y)
    alpha = rng.uniform(0.1, 0.9, size=5)
    lam, eta = 0.7, 0.3
    gram = (y[:, None] * phi0) @ (y[:, None] * phi0).T
    eq16 = eta * (np.log((1 - alpha) / alpha) - gram @ alpha / lam)
    np.testing.assert_allclose(theory.dual_velocity(alpha, U, s, lam, eta=eta), eq16, rtol=1e-10)


# ------------------------------------------------------------------------------------------------------ Lemma 1
@pytest.mark.parametrize(("s1", "s2", "lam"), [(3.0, 2.0, 0.1), (6.0, 2.0, 0.01), (2.0, 1.0, 1.0)])
def test_lemma1_error_shrinks_like_delta_squared(s1, s2, lam):
    def error(delta):
        U = theory.coupled_pair(delta)
        perturbative = theory.perturbative_fixed_point(U, [s1, s2], lam)
        return np.max(np.abs(perturbative.alpha - theory.fixed_point(U, [s1, s2], lam, approx=True).alpha))

    for delta in (0.1, 0.05, 0.025):
        ratio = error(delta) / error(delta / 2)
        assert 3.0 < ratio < 5.0


def test_lemma1_is_exact_without_coupling():
    point = theory.perturbative_fixed_point(np.eye(2), [3.0, 1.0], 0.2)
    np.testing.assert_allclose(point.alpha, theory.closed_form_fixed_point([3.0, 1.0], 0.2).alpha, rtol=1e-12)


# ------------------------------------------------------------------------------------------------------ Thm. 1
def test_thm1_every_fixed_point_on_a_random_grid_is_attractive():
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(1, 9))
        U, s = random_problem(rng, n, int(rng.integers(1, n + 1)), 10 ** rng.uniform(-1, 2))
        lam = 10 ** rng.uniform(-3, 2)
        for penalty in PENALTIES:
            for approx in (False, True):
                assert theory.is_attractive(U, s, lam, penalty, approx)


@pytest.mark.parametrize("approx", [False, True])
def test_jacobian_matches_finite_differences_of_the_velocity(approx):
    rng = np.random.default_rng(8)
    U, s = random_problem(rng, 4, 3, 2.0)
    lam, eta = 0.5, 0.7
    alpha = rng.uniform(0.1, 0.8, size=4)
    J = theory.jacobian_at_fixed_point(U, s, lam, eta=eta, approx=approx, alpha=alpha)
    h = 1e-6
    numeric = np.column_stack(
        [
            (
                theory.dual_velocity(alpha + h * e, U, s, lam, eta=eta, approx=approx)
                - theory.dual_velocity(alpha - h * e, U, s, lam, eta=eta, approx=approx)
            )
            / (2 * h)
            for e in np.eye(4)
        ]
    )
    np.testing.assert_allclose(J, numeric, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------------ Thm. 2
def test_thm2_weight_decay_starves_feature_2_on_a_grid():
    for delta in (0.05, 0.2, 0.5):
        for lam in (1e-3, 0.1, 10.0):
            for s2 in (0.5, 2.0):
                curve = theory.starvation_curve(delta, np.linspace(1.01 * s2, 10 * s2, 12), s2, lam)
                assert np.all(curve.dz2_ds1sq < 0)
                assert np.all(np.diff(curve.z2) < 0)
                assert np.all(np.diff(curve.z1) > 0)


@pytest.mark.parametrize("approx", [False, True])
def test_thm2_analytic_derivative_equals_central_finite_difference(approx):
    s2, lam, delta, h = 2.0, 0.1, 0.3, 1e-4
    grid = np.array([2.5, 3.0, 4.5, 6.0])
    curve = theory.starvation_curve(delta, grid, s2, lam, approx=approx)

    def z_at(s1_squared):
        point = theory.starvation_curve(delta, [np.sqrt(s1_squared)], s2, lam, approx=approx)
        return np.array([point.z1[0], point.z2[0]])

    for i, s1 in enumerate(grid):
        central = (z_at(s1**2 + h) - z_at(s1**2 - h)) / (2 * h)
        np.testing.assert_allclose(curve.dz2_ds1sq[i], central[1], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(curve.dz1_ds1sq[i], central[0], rtol=1e-6, atol=1e-9)


def test_thm2_spectral_decoupling_response_does_not_depend_on_s1():
    curve = theory.starvation_curve(0.4, np.linspace(1.0, 30.0, 15), 1.0, 0.05, "spectral_decoupling")
    np.testing.assert_allclose(curve.z2, curve.z2[0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(curve.z1, curve.z1[0], rtol=1e-12, atol=0)
    assert np.all(curve.dz2_ds1sq == 0)


def test_thm2_derivative_vanishes_at_equal_strengths_like_eq53():
    """At s1 = s2 the coupling matrix is s² I, so the response to feature 2 is stationary (Eq. 53 is 0 there)."""
    curve = theory.starvation_curve(0.3, [2.0], 2.0, 0.1)
    assert abs(curve.dz2_ds1sq[0]) < 1e-14


# ------------------------------------------------------------------------------------------- App. C simulation
@pytest.mark.parametrize(("penalty", "lam"), [("weight_decay", 0.01), ("spectral_decoupling", 0.002)])
def test_simulate_three_paths_reach_the_fixed_point(penalty, lam):
    U = theory.coupled_pair(0.6)
    for s1 in (2.0, 6.0):
        simulation = theory.simulate(U, [s1, 2.0], lam, penalty, n_steps=20_000, primal_lr=0.05)
        exact = simulation.fixed_point.z
        np.testing.assert_allclose(simulation.primal.z[-1], exact, rtol=1e-6)
        np.testing.assert_allclose(simulation.dual.z[-1], exact, rtol=1e-10)
        np.testing.assert_allclose(simulation.ode.z[-1], exact, rtol=1e-10)
        assert simulation.primal.z.shape == (20_001, 2)
        np.testing.assert_allclose(simulation.primal.z[0], 0.0)


def test_dual_ascent_is_euler_on_the_ode_clock():
    """Dual gradient ascent with a small step tracks the ODE at times lr * step (first-order agreement)."""
    U, s, lam = theory.coupled_pair(0.5), [2.0, 1.0], 0.5
    errors = []
    for lr in (2e-3, 1e-3):
        steps = round(0.5 / lr)
        ascent = theory.dual_ascent(0.1, U, s, lam, lr=lr, n_steps=steps)
        ode = theory.integrate_dual(0.1, U, s, lam, t=ascent.t * lr)
        errors.append(np.max(np.abs(ascent.alpha - ode.alpha)))
    assert errors[1] < 1e-3
    assert 1.6 < errors[0] / errors[1] < 2.4  # halving the step halves the error: Euler is first order


def test_simulate_weight_decay_starves_and_spectral_decoupling_does_not():
    U = theory.coupled_pair(0.6)
    wd = [theory.fixed_point(U, [s1, 2.0], 0.01).z for s1 in (2.0, 4.0, 6.0)]
    sd = [theory.fixed_point(U, [s1, 2.0], 0.002, "spectral_decoupling").z for s1 in (2.0, 4.0, 6.0)]
    assert wd[0][1] > wd[1][1] > wd[2][1]  # z2* falls as s1 grows (Fig. 6 left)
    assert wd[0][0] < wd[1][0] < wd[2][0]  # z1* rises
    np.testing.assert_allclose(sd, [sd[0]] * 3, rtol=1e-12)  # Fig. 6 right: unchanged


# ------------------------------------------------------------------------------------------------------ Def. 1
def test_features_is_the_svd_of_y_phi0_with_deterministic_signs():
    rng = np.random.default_rng(9)
    phi0 = rng.normal(size=(6, 10))
    y = np.where(rng.uniform(size=6) < 0.5, -1.0, 1.0)
    U, s, Vt = theory.features(phi0, y)
    assert U.shape == (6, 6) and s.shape == (6,) and Vt.shape == (6, 10)
    np.testing.assert_allclose((U * s) @ Vt, y[:, None] * phi0, atol=1e-12)
    np.testing.assert_allclose(U.T @ U, np.eye(6), atol=1e-12)
    assert np.all(np.diff(s) <= 0) and np.all(U.sum(axis=0) >= 0)
    U2, s2, _ = theory.features(phi0, y, k=2)
    np.testing.assert_allclose(U2, U[:, :2])
    np.testing.assert_allclose(s2, s[:2])


def test_features_of_a_label_aligned_feature_has_a_positive_u_column():
    """If every example carries feature j with its label's sign, U[:, j] is all positive (Def. 1's remark)."""
    y = np.array([1.0, -1.0, 1.0, -1.0])
    phi0 = np.outer(y, [1.0, 0.0, 0.0]) + np.array([[0, 0.1, 0], [0, 0, 0.1], [0, -0.1, 0], [0, 0, -0.1]])
    U, _, _ = theory.features(phi0, y, k=1)
    assert np.all(U[:, 0] > 0)


# ------------------------------------------------------------------------------------------------------ Table 4
@pytest.mark.parametrize("loss", theory.MARGIN_LOSSES)
def test_table4_dual_form_maximum_is_the_primal_loss(loss):
    bounds = (0.0, 1.0) if loss != "squared" else (-10.0, 10.0)
    for omega in (-3.0, -0.5, 0.0, 0.7, 1.0, 2.5):
        result = minimize_scalar(
            lambda a, w=omega: -float(theory.legendre_bound(loss, a, w)),
            bounds=bounds,
            method="bounded",
            options={"xatol": 1e-12},
        )
        # the hinge bound is linear in α: its maximum sits on the boundary, which the bounded search only nears
        endpoints = max(float(theory.legendre_bound(loss, a, omega)) for a in bounds)
        assert max(-result.fun, endpoints) == pytest.approx(float(theory.margin_loss(loss, omega)), abs=1e-9)
        best = theory.optimal_dual_variable(loss, omega)
        assert float(theory.legendre_bound(loss, best, omega)) == pytest.approx(
            float(theory.margin_loss(loss, omega)), abs=1e-12
        )


def test_cross_entropy_optimal_dual_is_minus_the_loss_derivative_lemma2():
    omega = np.linspace(-4, 4, 9)
    h = 1e-6
    derivative = (theory.margin_loss("cross_entropy", omega + h) - theory.margin_loss("cross_entropy", omega - h)) / (
        2 * h
    )
    np.testing.assert_allclose(theory.optimal_dual_variable("cross_entropy", omega), -derivative, rtol=1e-8)
    np.testing.assert_allclose(theory.optimal_dual_variable("cross_entropy", omega), expit(-omega))


def test_binary_entropy_values():
    np.testing.assert_allclose(theory.binary_entropy([0.0, 0.5, 1.0]), [0.0, np.log(2), 0.0])


# ------------------------------------------------------------------------------------------------------ errors
U2 = np.eye(2)
S2 = np.array([2.0, 1.0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.fixed_point(U2, S2, 0.0), "lam"),
        (lambda: theory.fixed_point(U2, S2, -1.0), "lam"),
        (lambda: theory.fixed_point(U2, S2, float("nan")), "lam"),
        (lambda: theory.fixed_point(U2, S2, "big"), "lam"),
        (lambda: theory.fixed_point(U2, [2.0, -1.0], 0.1), "s must be non-negative"),
        (lambda: theory.fixed_point(U2, [2.0, np.inf], 0.1), "s must be finite"),
        (lambda: theory.fixed_point(U2, [[2.0, 1.0]], 0.1), "1-D"),
        (lambda: theory.fixed_point(np.array([[1.0, 0.1], [0.0, 1.0]]), S2, 0.1), "orthonormal columns"),
        (lambda: theory.fixed_point(np.eye(3)[:, :2] * 1.001, S2, 0.1), "orthonormal columns"),
        (lambda: theory.fixed_point(np.eye(3), S2, 0.1), "shape mismatch"),
        (lambda: theory.fixed_point(np.eye(3)[:2, :], [1.0, 1.0, 1.0], 0.1), "k <= n"),
        (lambda: theory.fixed_point(U2, S2, 0.1, "dropout"), "penalty"),
        (lambda: theory.integrate_dual(0.0, U2, S2, 0.1), "alpha0"),
        (lambda: theory.integrate_dual(1.0, U2, S2, 0.1), "alpha0"),
        (lambda: theory.integrate_dual([0.5, 1.5], U2, S2, 0.1), "alpha0"),
        (lambda: theory.integrate_dual([0.5, 0.5, 0.5], U2, S2, 0.1), "shape mismatch"),
        (lambda: theory.integrate_dual(0.5, U2, S2, 0.1, t=[1.0, 0.5]), "increasing"),
        (lambda: theory.dual_velocity([0.5, 0.5], U2, S2, 0.1, eta=0.0), "eta"),
        (lambda: theory.dual_velocity([0.5], U2, S2, 0.1), "shape mismatch"),
        (lambda: theory.dual_ascent(0.5, U2, S2, 0.1, lr=-1.0), "lr"),
        (lambda: theory.primal_descent(U2, S2, 0.1, n_steps=-3), "n_steps"),
        (lambda: theory.primal_descent(U2, S2, 0.1, theta0=[1.0]), "theta0"),
        (lambda: theory.features(np.ones((3, 2)), [1, 0, 1]), "labels"),
        (lambda: theory.features(np.ones((3, 2)), [1, -1]), "shape mismatch"),
        (lambda: theory.features(np.ones((3, 2)), [1, -1, 1], k=5), "k must be"),
        (lambda: theory.coupled_pair(1.5), "delta"),
        (lambda: theory.starvation_curve(0.2, [3.0], 2.0, 0.0), "lam"),
        (lambda: theory.margin_loss("logistic", 0.0), "loss"),
        (lambda: theory.legendre_bound("hinge", 1.5, 0.0), "alpha"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
