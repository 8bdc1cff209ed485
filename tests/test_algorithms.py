"""Tests of gradstarve.algorithms: every method trains, the equivalences between methods, agreement with the
reference implementations' objectives, the link to the dual theory, checkpoints and clear errors.
Tolerances are stated where they are used."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from gradstarve import theory
from gradstarve.algorithms import ALGORITHMS, build_algorithm, get_algorithm
from gradstarve.algorithms.lff import reinitialised_copy
from gradstarve.hparams import ALGORITHM_NAMES, default_hparams
from gradstarve.models import MLP
from gradstarve.penalties import per_example_cross_entropy

N_FEATURES = 5


def two_environment_problem(n: int = 96, classes: int = 2, seed: int = 0, dtype=torch.float32):
    """A tiny problem: a noisy invariant feature and a spurious one whose strength differs between 2 environments.

    Returns ``(x, y, group, index)``.
    """
    g = torch.Generator().manual_seed(seed)
    group = torch.arange(n) % 2
    y = torch.randint(0, classes, (n,), generator=g)
    signal = (2.0 * y - (classes - 1)).to(dtype)
    x = torch.randn(n, N_FEATURES, generator=g, dtype=dtype)
    x[:, 0] += signal
    flip = torch.rand(n, generator=g) < torch.where(group == 0, 0.1, 0.3)
    x[:, 1] += torch.where(flip, -signal, signal) * 2.0
    return x, y, group, torch.arange(n)


def make_model(seed: int = 1, outputs: int = 1, dtype=torch.float32) -> nn.Module:
    return MLP(N_FEATURES, (16,), outputs, generator=torch.Generator().manual_seed(seed)).to(dtype)


def training_loss(algorithm, x, y) -> float:
    with torch.no_grad():
        return float(per_example_cross_entropy(algorithm.predict(x), y).mean())


def synthetic_hparams(name: str, **overrides) -> dict:
    hparams = default_hparams(name, "synthetic")
    hparams.update(overrides)
    return hparams


def params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


# ------------------------------------------------------------------------------------------------- registry
def test_registry_is_explicit_and_matches_the_hparams_table():
    assert list(ALGORITHMS) == ["erm", "sd", "irm", "vrex", "group_dro", "lff", "jtt"]
    assert tuple(ALGORITHMS) == ALGORITHM_NAMES
    for name, cls in ALGORITHMS.items():
        assert get_algorithm(name) is cls


def test_unknown_algorithm_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown algorithm 'dro'; known algorithms: erm, sd, irm, vrex, group_dro"):
        get_algorithm("dro")
    with pytest.raises(ValueError, match="known algorithms"):
        build_algorithm("ermm", make_model(), default_hparams("erm", "synthetic"), 2)


# ------------------------------------------------------------------------------------------------- every method trains
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_algorithm_takes_20_steps_and_lowers_the_training_loss(name):
    x, y, group, index = two_environment_problem()
    # Short anneal periods so that IRM and V-REx switch to their full penalty (and reset Adam) within 20 steps
    short = {"irm_anneal_steps": 10, "vrex_anneal_steps": 10, "sd_schedule": "linear", "sd_anneal_steps": 5}
    hparams = default_hparams(name, "synthetic")
    hparams.update({key: value for key, value in short.items() if key in hparams})  # unknown keys are refused
    algorithm = ALGORITHMS[name](make_model(), hparams, n_groups=2)
    before = training_loss(algorithm, x, y)
    for step in range(20):
        if name == "jtt" and step == 10:
            errors = algorithm.identify(x, y, index)
            assert 0 < int(errors.sum()) < len(y)
        logs = algorithm.update((x, y, group, index))
        assert logs["step"] == step
        assert all(np.isfinite(value) for value in logs.values()), logs
    assert torch.all(torch.isfinite(params(algorithm)))
    after = training_loss(algorithm, x, y)
    assert after < 0.95 * before, (before, after)
    if name in ("irm", "vrex"):
        assert logs["penalty_weight"] == algorithm.hparams[f"{name}_lambda"]


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_algorithm_handles_multiclass_logits(name):
    x, y, group, index = two_environment_problem(classes=3, seed=2)
    hparams = synthetic_hparams(name)
    if name == "sd":
        hparams["sd_lam"] = [0.1, 0.2, 0.3]  # class-conditional SD on all logits
    algorithm = ALGORITHMS[name](make_model(outputs=3), hparams, n_groups=2)
    before = training_loss(algorithm, x, y)
    losses = []
    for step in range(8):
        if name == "jtt" and step == 4:
            algorithm.identify(x, y)
            before, losses = None, []  # stage 2 restarts from the initial model on an up-weighted loss
        logs = algorithm.update((x, y, group, index))
        losses.append(logs["loss"])
        assert all(np.isfinite(value) for value in logs.values()), logs
    if before is None:
        assert losses[-1] < losses[0]
    else:
        assert training_loss(algorithm, x, y) < before


def test_flat_and_column_binary_logits_train_identically():
    class Flat(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).reshape(-1)

    x, y, group, _ = two_environment_problem(dtype=torch.float64)
    for name in ("erm", "sd", "irm", "vrex", "group_dro"):
        column = ALGORITHMS[name](make_model(dtype=torch.float64), synthetic_hparams(name), 2)
        flat = ALGORITHMS[name](Flat(make_model(dtype=torch.float64)), synthetic_hparams(name), 2)
        for _ in range(3):
            column.update((x, y, group))
            flat.update((x, y, group))
        torch.testing.assert_close(params(column), params(flat), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------- equivalences
def test_sd_with_lambda_zero_is_erm():
    """Identical initialisation, 15 Adam steps: SD(λ = 0) and ERM give the same parameters (1e-12; in fact bitwise)."""
    x, y, group, _ = two_environment_problem(dtype=torch.float64)
    erm = ALGORITHMS["erm"](make_model(dtype=torch.float64), synthetic_hparams("erm"), 2)
    sd = ALGORITHMS["sd"](make_model(dtype=torch.float64), synthetic_hparams("sd", sd_lam=0.0), 2)
    for _ in range(15):
        logs_erm, logs_sd = erm.update((x, y, group)), sd.update((x, y, group))
        assert logs_erm["loss"] == pytest.approx(logs_sd["loss"], rel=1e-12)
    torch.testing.assert_close(params(erm), params(sd), rtol=0, atol=1e-12)


def test_group_dro_with_one_group_is_erm():
    x, y, _, _ = two_environment_problem()
    group = torch.zeros_like(y)
    erm = ALGORITHMS["erm"](make_model(), synthetic_hparams("erm"), 1)
    dro = ALGORITHMS["group_dro"](make_model(), synthetic_hparams("group_dro", groupdro_eta=0.5), 1)
    for _ in range(15):
        erm.update((x, y, group))
        dro.update((x, y, group))
    assert dro.group_weights.tolist() == [1.0]
    torch.testing.assert_close(params(erm), params(dro), rtol=0, atol=1e-6)


def test_group_dro_weights_follow_exponentiated_group_risks():
    """From uniform q, one update gives q ∝ exp(η R_g) (Sagawa et al., Algorithm 1); the step minimises q·R."""
    x, y, group, _ = two_environment_problem(dtype=torch.float64)
    group = torch.where(torch.arange(len(y)) < 20, 2, group)  # three groups of different risk
    eta = 0.7
    dro = ALGORITHMS["group_dro"](make_model(dtype=torch.float64), synthetic_hparams("group_dro", groupdro_eta=eta), 3)
    with torch.no_grad():
        losses = per_example_cross_entropy(dro.predict(x), y)
        risks = torch.stack([losses[group == g].mean() for g in range(3)])
    logs = dro.update((x, y, group))
    torch.testing.assert_close(dro.group_weights, torch.softmax(eta * risks, 0), rtol=1e-12, atol=0)
    assert logs["loss"] == pytest.approx(float(torch.softmax(eta * risks, 0) @ risks), rel=1e-12)
    assert logs["worst_group_nll"] == pytest.approx(float(risks.max()), rel=1e-12)


# ------------------------------------------------------------------------------------------------- reference objectives
def _reference_irm_training(model, envs, hp, steps, reset):
    """The IRM reference Colored MNIST loop (one forward per environment, autograd dummy-scale penalty)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    for step in range(steps):
        if reset and step == hp["irm_anneal_steps"]:
            optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])
        nlls, penalties = [], []
        for x, y in envs:
            logits = model(x)
            nlls.append(functional.binary_cross_entropy_with_logits(logits, y.double()[:, None]))
            scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
            loss = functional.binary_cross_entropy_with_logits(logits * scale, y.double()[:, None])
            (grad,) = torch.autograd.grad(loss, [scale], create_graph=True)
            penalties.append(grad.square().sum())
        loss = torch.stack(nlls).mean() + hp["l2_weight"] * sum(w.norm().pow(2) for w in model.parameters())
        weight = hp["irm_lambda"] if step >= hp["irm_anneal_steps"] else 1.0
        loss = loss + weight * torch.stack(penalties).mean()
        if weight > 1.0:
            loss = loss / weight
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.mark.parametrize("reset", [False, True])
def test_irm_reproduces_the_reference_training_loop(reset):
    """Same parameters as the reference loop after 8 steps across the anneal switch (1e-10, float64)."""
    x, y, group, _ = two_environment_problem(n=50, dtype=torch.float64)
    group = (torch.arange(50) >= 30).long()  # unequal environments: 30 and 20 examples
    hp = synthetic_hparams(
        "irm", irm_lambda=500.0, irm_anneal_steps=4, l2_weight=1e-3, reset_optimizer_at_anneal=reset, lr=1e-2
    )
    ours = ALGORITHMS["irm"](make_model(dtype=torch.float64), hp, 2)
    for _ in range(8):
        logs = ours.update((x, y, group))
    assert logs["penalty_weight"] == 500.0
    envs = [(x[group == e], y[group == e]) for e in (0, 1)]
    reference = _reference_irm_training(make_model(dtype=torch.float64), envs, hp, 8, reset)
    torch.testing.assert_close(params(ours), params(reference), rtol=0, atol=1e-10)


def test_vrex_objective_matches_the_released_code_up_to_a_constant():
    """Released V-REx: R1 + R2 + l2‖θ‖² + c (R1 - R2)², divided by c when c > 1. With the converted defaults
    (w = 2c, l2_weight = l2/2, weight 2 before annealing) our loss is exactly a quarter of it, before and after."""
    x, y, group, _ = two_environment_problem(dtype=torch.float64)
    hp = default_hparams("vrex", "colored-mnist")
    c, l2 = hp["vrex_lambda"] / 2, 2 * hp["l2_weight"]
    for anneal_steps, weight in ((5, 1.0), (0, c)):
        model = make_model(dtype=torch.float64)
        with torch.no_grad():
            r1, r2 = (
                functional.binary_cross_entropy_with_logits(model(x[group == e]), y[group == e].double()[:, None])
                for e in (0, 1)
            )
            norm = sum(w.norm().pow(2) for w in model.parameters())
            released = r1 + r2 + l2 * norm + weight * (r1 - r2) ** 2
            released = released / weight if weight > 1 else released
        algorithm = ALGORITHMS["vrex"](model, hp | {"vrex_anneal_steps": anneal_steps}, 2)
        logs = algorithm.update((x, y, group))
        assert logs["loss"] == pytest.approx(float(released) / 4, rel=1e-12)
        assert logs["penalty"] == pytest.approx(float((r1 - r2) ** 2 / 4), rel=1e-12)


def test_sd_paper_released_schedule_matches_the_released_loss():
    x, y, group, _ = two_environment_problem(dtype=torch.float64)
    hp = synthetic_hparams("sd", sd_lam=4e-5, sd_schedule="paper_released", sd_anneal_steps=2)
    algorithm = ALGORITHMS["sd"](make_model(dtype=torch.float64), hp, 2)
    for step in range(4):
        with torch.no_grad():
            logits = algorithm.predict(x)
            nll = functional.binary_cross_entropy_with_logits(logits, y.double()[:, None])
            sd = (logits**2).mean()
            released = nll + 2e-5 * sd if step < 2 else 2e-5 * (sd + nll)
        assert algorithm.update((x, y, group))["loss"] == pytest.approx(float(released), rel=1e-12)


def _reference_lff(model_d, model_b, batches, hp, n, classes):
    """LfF's reference loop (its EMA class and class-wise max normalisation), with the exact GCE."""
    from gradstarve.losses import generalized_cross_entropy

    labels_all = torch.zeros(n, dtype=torch.int64)
    for _, y, _, index in batches:
        labels_all[index] = y
    ema = {k: torch.zeros(n, dtype=torch.float64) for k in "bd"}
    updated = {k: torch.zeros(n, dtype=torch.float64) for k in "bd"}
    opt_d = torch.optim.Adam(model_d.parameters(), lr=hp["lr"])
    opt_b = torch.optim.Adam(model_b.parameters(), lr=hp["lr"])
    alpha = hp["lff_ema"]
    for x, y, _, index in batches:
        logit_b, logit_d = model_b(x), model_d(x)
        losses = {
            "b": per_example_cross_entropy(logit_b, y).detach(),
            "d": per_example_cross_entropy(logit_d, y).detach(),
        }
        normalised = {}
        for k in "bd":
            ema[k][index] = alpha * ema[k][index] + (1 - alpha * updated[k][index]) * losses[k]
            updated[k][index] = 1
            value = ema[k][index].clone()
            for c in range(classes):
                value[y == c] /= ema[k][labels_all == c].max()
            normalised[k] = value
        weight = normalised["b"] / (normalised["b"] + normalised["d"] + 1e-8)
        loss = (
            generalized_cross_entropy(logit_b, y, hp["lff_q"]) + (per_example_cross_entropy(logit_d, y) * weight).mean()
        )
        opt_b.zero_grad()
        opt_d.zero_grad()
        loss.backward()
        opt_b.step()
        opt_d.step()


def test_lff_reproduces_the_reference_training_loop():
    """Minibatches revisiting examples in a shuffled order; both networks match the reference loop (1e-10)."""
    x, y, group, index = two_environment_problem(n=24, dtype=torch.float64)
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    batches = []
    for epoch in range(2):
        perm = order if epoch == 0 else order.flip(0)
        for chunk in perm.split(8):
            batches.append((x[chunk], y[chunk], group[chunk], index[chunk]))
    hp = synthetic_hparams("lff")
    model_d, model_b = make_model(dtype=torch.float64), make_model(seed=9, dtype=torch.float64)
    ours = ALGORITHMS["lff"](copy.deepcopy(model_d), hp, 2, bias_model=copy.deepcopy(model_b))
    for batch in batches:
        ours.update(batch)
    _reference_lff(model_d, model_b, batches, hp, 24, 2)
    torch.testing.assert_close(params(ours.model), params(model_d), rtol=0, atol=1e-10)
    torch.testing.assert_close(params(ours.bias_model), params(model_b), rtol=0, atol=1e-10)


def test_lff_biased_network_is_a_seeded_reinitialisation():
    model = make_model()
    state = torch.random.get_rng_state()
    first, second = reinitialised_copy(model, 5), reinitialised_copy(model, 5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    torch.testing.assert_close(params(first), params(second), rtol=0, atol=0)
    assert not torch.allclose(params(first), params(model))
    assert not torch.allclose(params(reinitialised_copy(model, 6)), params(first))
    algorithm = ALGORITHMS["lff"](model, synthetic_hparams("lff", seed=5), 2)
    torch.testing.assert_close(params(algorithm.bias_model), params(first), rtol=0, atol=0)


def test_jtt_upweights_the_first_models_errors():
    x, y, group, index = two_environment_problem(n=40, dtype=torch.float64)
    hp = synthetic_hparams("jtt", jtt_upweight=3.0)
    jtt = ALGORITHMS["jtt"](make_model(dtype=torch.float64), hp, 2)
    initial = params(jtt).clone()
    for _ in range(5):
        assert jtt.update((x, y, group))["stage"] == 1.0
    with torch.no_grad():
        logits = jtt.predict(x).reshape(-1)
    errors = jtt.identify(x, y, index, batch_size=7)
    torch.testing.assert_close(errors, (logits > 0).long() != y)
    assert 0 < int(errors.sum()) < 40
    torch.testing.assert_close(params(jtt), initial, rtol=0, atol=0)  # the final model starts from scratch
    # Full batch: the loss is the mean over the training set with the error set repeated λ_up = 3 times
    upsampled_x = torch.cat([x, x[errors], x[errors]])
    upsampled_y = torch.cat([y, y[errors], y[errors]])
    with torch.no_grad():
        expected = per_example_cross_entropy(jtt.predict(upsampled_x), upsampled_y).mean()
    logs = jtt.update((x, y, group, index))
    assert logs["stage"] == 2.0
    assert logs["loss"] == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="already called"):
        jtt.identify(x, y)


# ------------------------------------------------------------------------------------------------- theory link
def _linear_problem(n: int, m: int, seed: int):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n, m))
    y = np.tile([0, 1], n // 2)
    return phi, y, 2.0 * y - 1.0


def _train_linear(name: str, phi: np.ndarray, y: np.ndarray, steps: int, **overrides) -> nn.Linear:
    model = nn.Linear(phi.shape[1], 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
    hp = synthetic_hparams(name, optimizer="sgd", momentum=0.9, lr=0.5, **overrides)
    algorithm = ALGORITHMS[name](model, hp, 1)
    x, labels = torch.tensor(phi), torch.tensor(y)
    for _ in range(steps):
        algorithm.update((x, labels))
    return model


def test_sd_reaches_the_fixed_point_of_eq27():
    """mean BCE + λ/2 mean ŷ² on a linear model (n <= m, so U is square) reaches r_i = α*/λ with α* the fixed point
    of Eq. 27, log((1 - α)/α) = α/λ, from gradstarve.theory (1e-5; full-batch SGD in float64)."""
    phi, y, signed = _linear_problem(n=6, m=10, seed=0)
    lam = 0.5
    U, s, _ = theory.features(phi, signed)
    assert U.shape == (6, 6)
    point = theory.fixed_point(U, s, lam, "spectral_decoupling")
    np.testing.assert_allclose(np.log((1 - point.alpha) / point.alpha), point.alpha / lam, rtol=1e-10)
    model = _train_linear("sd", phi, y, 800, sd_lam=lam)
    r = signed * (phi @ model.weight.detach().numpy().reshape(-1))
    np.testing.assert_allclose(r, point.alpha / lam, rtol=0, atol=1e-5)


def test_weight_decay_reaches_the_fixed_point_of_eq18():
    """mean BCE with torch weight_decay wd (the gradient of wd/2 ‖θ‖²) is Eq. 9 with theory λ = n · wd; its
    responses z = U^T r reach Eq. 18's z* = S² U^T α*/λ (1e-5)."""
    phi, y, signed = _linear_problem(n=8, m=3, seed=1)
    wd = 0.05
    U, s, _ = theory.features(phi, signed)
    point = theory.fixed_point(U, s, len(y) * wd, "weight_decay")
    model = _train_linear("erm", phi, y, 800, weight_decay=wd)
    z = U.T @ (signed * (phi @ model.weight.detach().numpy().reshape(-1)))
    np.testing.assert_allclose(z, point.z, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ["irm", "group_dro", "lff", "jtt"])
def test_state_dict_is_a_complete_checkpoint(name):
    x, y, group, index = two_environment_problem()
    hp = synthetic_hparams(name, **({"irm_anneal_steps": 4} if name == "irm" else {}))
    algorithm = ALGORITHMS[name](make_model(), hp, 2)
    for _ in range(3):
        algorithm.update((x, y, group, index))
    saved = copy.deepcopy(algorithm.state_dict())
    restored = ALGORITHMS[name](make_model(seed=7), hp, 2)
    restored.load_state_dict(saved)
    assert restored.num_updates == algorithm.num_updates
    if name == "jtt":  # a stage-1 checkpoint carries the initial parameters that identify() restores
        torch.testing.assert_close(algorithm.identify(x, y), restored.identify(x, y), rtol=0, atol=0)
        torch.testing.assert_close(params(restored), params(make_model()), rtol=0, atol=0)
    for _ in range(3):
        a, b = algorithm.update((x, y, group, index)), restored.update((x, y, group, index))
        assert a == b
    torch.testing.assert_close(params(algorithm), params(restored), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["irm", "vrex", "group_dro"])
def test_methods_that_need_groups_reject_batches_without_them(name):
    x, y, _, _ = two_environment_problem()
    algorithm = ALGORITHMS[name](make_model(), synthetic_hparams(name), 2)
    with pytest.raises(ValueError, match="needs the environment / group id"):
        algorithm.update((x, y))
    with pytest.raises(ValueError, match="needs the environment / group id"):
        algorithm.update((x, y, None))
    with pytest.raises(ValueError, match=r"group must lie in \[0, 1\], found values in \[5, 5\]"):
        algorithm.update((x, y, torch.full_like(y, 5)))


def test_methods_that_need_indices_say_so():
    x, y, group, _ = two_environment_problem()
    lff = ALGORITHMS["lff"](make_model(), synthetic_hparams("lff"), 2)
    with pytest.raises(ValueError, match=r"LfF .* needs the index"):
        lff.update((x, y, group))
    jtt = ALGORITHMS["jtt"](make_model(), synthetic_hparams("jtt"), 2)
    jtt.update((x, y))  # stage 1 is ERM and needs neither groups nor indices
    jtt.identify(x, y)
    with pytest.raises(ValueError, match="needs the index"):
        jtt.update((x, y, group))


def test_bad_labels_and_batches_are_rejected():
    x, y, group, _ = two_environment_problem()
    for name in ALGORITHMS:
        algorithm = ALGORITHMS[name](make_model(), synthetic_hparams(name), 2)
        with pytest.raises(ValueError, match=r"labels in \[0, 2\]"):
            algorithm.update((x, torch.where(y == 1, 2, y), group, torch.arange(len(y))))
    erm = ALGORITHMS["erm"](make_model(), synthetic_hparams("erm"), 2)
    with pytest.raises(ValueError, match="int64"):
        erm.update((x, y.float(), group))
    with pytest.raises(ValueError, match="a batch must be a tuple"):
        erm.update(x)
    with pytest.raises(FloatingPointError, match="loss is"):
        erm.update((torch.full_like(x, float("inf")), y, group))


def test_bad_hyperparameters_are_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="sd_lam"):
        ALGORITHMS["sd"](model, synthetic_hparams("sd", sd_lam=-0.1), 2)
    with pytest.raises(ValueError, match="sd_lam"):
        ALGORITHMS["sd"](model, synthetic_hparams("sd", sd_lam=[0.1, -0.1]), 2)
    with pytest.raises(ValueError, match=r"missing hyperparameters \['irm_lambda'\]"):
        hp = synthetic_hparams("irm")
        del hp["irm_lambda"]
        ALGORITHMS["irm"](model, hp, 2)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        ALGORITHMS["erm"](model, synthetic_hparams("erm", optimizer="rmsprop"), 2)
    with pytest.raises(ValueError, match="lr"):
        ALGORITHMS["erm"](model, synthetic_hparams("erm", lr=0.0), 2)
    with pytest.raises(ValueError, match="n_groups"):
        ALGORITHMS["erm"](model, synthetic_hparams("erm"), 0)
    with pytest.raises(ValueError, match="jtt_upweight"):
        ALGORITHMS["jtt"](model, synthetic_hparams("jtt", jtt_upweight=0.5), 2)
    with pytest.raises(ValueError, match="sd_schedule"):
        ALGORITHMS["sd"](model, synthetic_hparams("sd", sd_schedule="cosine"), 2)
