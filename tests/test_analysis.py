"""FeatureAnalysis, FeatureTracker and starvation_report against direct linear algebra."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from gradstarve.analysis import FeatureAnalysis, FeatureTracker, starvation_report
from gradstarve.data.two_moons import two_moons
from gradstarve.models import MLP


def linear_problem(n: int = 12, d: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=generator)
    y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, dtype=torch.float64, generator=generator))
    return model, x, y


def test_feature_analysis_of_a_linear_model_is_the_svd_of_y_x():
    """For f(x) = w·x the NTRF is X itself (Eq. 3), so the features are the SVD of diag(y) X (Def. 1)."""
    model, x, y = linear_problem()
    analysis = FeatureAnalysis(k=5).fit(model, x, y)
    U, s, _ = np.linalg.svd(y.numpy()[:, None] * x.numpy(), full_matrices=False)
    U = U * np.where(U.sum(axis=0) < 0, -1.0, 1.0)  # the library's sign convention: non-negative column sums
    np.testing.assert_allclose(analysis.strengths_, s, rtol=1e-10)
    np.testing.assert_allclose(analysis.eigenvalues_, s**2, rtol=1e-10)
    np.testing.assert_allclose(analysis.U_, U, atol=1e-10)
    np.testing.assert_allclose(analysis.gram_, x.numpy() @ x.numpy().T, rtol=1e-12)
    assert analysis.trace_ == pytest.approx(float(np.sum(s**2)), rel=1e-12)


def test_response_is_u_transpose_y_yhat_and_the_baseline_gives_eq6():
    model, x, y = linear_problem(seed=1)
    analysis = FeatureAnalysis(k=4).fit(model, x, y)
    logits = torch.randn(12, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = analysis.U_.T @ (y.numpy() * logits.numpy()[:, 0])
    np.testing.assert_allclose(analysis.response(logits), expected, rtol=1e-12)
    baseline = analysis.initial_logits_
    np.testing.assert_allclose(
        analysis.response(logits, baseline), analysis.U_.T @ (y.numpy() * (logits.numpy()[:, 0] - baseline)), rtol=1e-12
    )
    np.testing.assert_allclose(analysis.response(baseline, baseline), 0.0, atol=1e-12)


def test_matrix_free_analysis_matches_dense():
    model = MLP(2, (16,), 1, generator=torch.Generator().manual_seed(2)).double()
    data = two_moons(n=80, seed=3)
    x = data.x.double()
    dense = FeatureAnalysis(k=4, method="dense").fit(model, x, data.signed_labels())
    free = FeatureAnalysis(k=4, method="matrix_free", batch_size=32).fit(model, x, data.signed_labels())
    np.testing.assert_allclose(free.strengths_, dense.strengths_, rtol=1e-8)
    np.testing.assert_allclose(free.U_, dense.U_, atol=1e-8)
    assert free.trace_ == pytest.approx(dense.trace_, rel=1e-12)
    assert isinstance(dense.plot(), Figure)


def test_tracker_records_chosen_steps_with_u_fixed_at_initialisation():
    data = two_moons(n=60, seed=4)
    model = MLP(2, (32,), 1, generator=torch.Generator().manual_seed(4))
    with pytest.warns(UserWarning, match="mapped"):  # {0, 1} labels are mapped, and the user is told
        tracker = FeatureTracker(model, data.x, data.y, k=3, every=5)
    U0 = tracker.analysis.U_.copy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    signs = data.signed_labels()
    for step in range(21):
        tracker(step)
        loss = nn.functional.softplus(-signs * model(data.x)[:, 0]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    history = tracker.history
    assert isinstance(history, pd.DataFrame)
    assert history["step"].tolist() == [0, 5, 10, 15, 20]
    assert list(history.columns) == ["step", "z1", "z2", "z3"]
    np.testing.assert_array_equal(tracker.analysis.U_, U0)  # U is not refitted
    with torch.no_grad():
        final = model(data.x)[:, 0].double().numpy()
    tracker.record(99, final)
    np.testing.assert_allclose(
        tracker.history.iloc[-1, 1:].to_numpy(float), U0.T @ (signs.double().numpy() * final), rtol=1e-6
    )
    assert isinstance(tracker.plot(features=(1, 2)), Figure)
    relative = FeatureTracker(model, data.x, signs, k=2, steps=[0], relative_to_initial=True)
    np.testing.assert_allclose(relative(0), 0.0, atol=1e-9)


def test_starvation_report_group_contributions_sum_to_the_response():
    data = two_moons(n=90, seed=5)
    model = MLP(2, (24,), 1, generator=torch.Generator().manual_seed(5)).double()
    groups = torch.arange(90) % 3
    table, figure = starvation_report(
        model, data.x.double(), data.signed_labels(), groups, k=5, group_names=["a", "b", "c"]
    )
    assert isinstance(figure, Figure)
    assert list(table["feature"]) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(table[["z[a]", "z[b]", "z[c]"]].sum(axis=1), table["response"], rtol=1e-10, atol=1e-12)
    # Against Def. 1 computed independently: the plain per-example Jacobian, Y J Jᵀ Y's top eigenpairs, z = Uᵀ Y ŷ
    params = dict(model.named_parameters())
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(model, p, (data.x.double(),))[:, 0])(params)
    J = torch.cat([j.reshape(90, -1) for j in jac.values()], dim=1).detach().numpy()
    signs = data.signed_labels().double().numpy()
    eigenvalues, vectors = np.linalg.eigh((signs[:, None] * J) @ (signs[:, None] * J).T)
    top = eigenvalues[::-1][:5]
    np.testing.assert_allclose(table["strength_share"], top / top.sum(), rtol=1e-8)
    with torch.no_grad():
        z = vectors[:, ::-1][:, :5].T @ (signs * model(data.x.double())[:, 0].numpy())
    np.testing.assert_allclose(table["response_share"], z**2 / np.sum(z**2), rtol=1e-6)
    summary = table.attrs["groups"]
    assert summary["count"].tolist() == [30, 30, 30]
    with torch.no_grad():
        margins = data.signed_labels().double() * model(data.x.double())[:, 0]
    assert summary["mean_margin"].tolist() == pytest.approx([float(margins[groups == g].mean()) for g in range(3)])


def test_analysis_errors():
    model, x, y = linear_problem()
    with pytest.raises(ValueError, match="labels must be in"):
        FeatureAnalysis(k=2).fit(model, x, torch.arange(12))
    with pytest.raises(ValueError, match="12 examples but y has 3"):
        FeatureAnalysis(k=2).fit(model, x, y[:3])
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureAnalysis().response(torch.zeros(3))
    analysis = FeatureAnalysis(k=2).fit(model, x, y)
    with pytest.raises(ValueError, match="12 entries"):
        analysis.response(torch.zeros(5))
    with pytest.raises(ValueError, match="matrix_free"):
        FeatureAnalysis(method="matrix_free").fit(model, x, y)
    with pytest.raises(ValueError, match="method"):
        FeatureAnalysis(method="svd")
    with pytest.raises(ValueError, match="groups must have 12"):
        starvation_report(model, x, y, torch.zeros(4))


def test_cli_ntk_spectrum_two_moons(tmp_path):
    from typer.testing import CliRunner

    from gradstarve.cli import app

    result = CliRunner().invoke(app, ["ntk", "spectrum", "--n", "120", "--k", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "label alignment" in result.output
    assert (tmp_path / "spectrum-two-moons.png").exists()
    rows = pd.read_csv(tmp_path / "spectrum-two-moons.csv")
    assert rows["strength"].is_monotonic_decreasing and len(rows) == 4
    assert 0 < rows["trace_share"].sum() <= 1
    bad = CliRunner().invoke(app, ["ntk", "spectrum", "--dataset", "imagenet"])
    assert bad.exit_code == 2 and "dataset must be one of" in bad.output


def _planted_shortcut(n: int = 600):
    """A clean, strong shortcut (agrees with the label 97 %, scale 3) and a weak, noisy core feature (80 %, noise
    0.8), plus 6 noise inputs."""
    generator = torch.Generator().manual_seed(0)
    y = (torch.rand(n, generator=generator) < 0.5).long()
    signs = 2.0 * y - 1
    core = torch.where(torch.rand(n, generator=generator) < 0.8, signs, -signs) + 0.8 * torch.randn(
        n, generator=generator
    )
    shortcut = 3.0 * torch.where(torch.rand(n, generator=generator) < 0.97, signs, -signs)
    shortcut = shortcut + 0.1 * torch.randn(n, generator=generator)
    x = torch.stack([core, shortcut, *torch.randn(6, n, generator=generator)], dim=1).double()
    return x, y, core, shortcut


def test_the_report_flags_the_core_feature_as_starved_on_a_planted_shortcut():
    x, y, core, shortcut = _planted_shortcut()
    model = MLP(8, (64,), 1, generator=torch.Generator().manual_seed(1)).double()
    at_init = FeatureAnalysis(k=8).fit(model, x, y)  # the features the network starts with
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    signs = (2 * y - 1).double()
    for _ in range(300):
        loss = torch.nn.functional.softplus(-signs * model(x)[:, 0]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    table, _ = starvation_report(
        model, x, y, groups=y, attributes={"core": core, "shortcut": shortcut}, analysis=at_init
    )
    starved = table[table["starved"]]
    assert len(starved) >= 1
    assert (starved["alignment_core"] > starved["alignment_shortcut"]).all()  # the starved feature is the core one
    dominant = table.loc[table["response_share"].idxmax()]
    assert dominant["alignment_shortcut"] > 0.8 and dominant["response_share"] > 0.5
    verdict = " ".join(table.attrs["verdict"])
    assert "`shortcut`" in verdict and "`core`" in verdict and "is starved" in verdict
    # alignments against numpy's correlation, within class
    values = at_init.labels_[:, None] * at_init.U_
    j = int(starved.iloc[0]["feature"]) - 1
    expected = sum(
        np.mean(at_init.labels_ == c)
        * np.corrcoef(values[at_init.labels_ == c, j], core.numpy()[at_init.labels_ == c])[0, 1]
        for c in (-1, 1)
    )
    assert starved.iloc[0]["alignment_core"] == pytest.approx(abs(expected), rel=1e-10)
    assert table["alignment_label"].iloc[0] == pytest.approx(abs(np.corrcoef(values[:, 0], at_init.labels_)[0, 1]))


def test_a_fitted_analysis_saves_and_loads_without_pickle_or_the_gram(tmp_path):
    x, y, _, _ = _planted_shortcut(120)
    model = MLP(8, (16,), 1, generator=torch.Generator().manual_seed(1)).double()
    fitted = FeatureAnalysis(k=4).fit(model, x, y)
    path = fitted.save(tmp_path / "features.npz")
    assert path.stat().st_size < 20_000  # U (120 x 4) and a few vectors, not the 120 x 120 Gram
    loaded = FeatureAnalysis.load(path)
    for name in ("U_", "strengths_", "eigenvalues_", "labels_", "initial_logits_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fitted, name))
    assert loaded.trace_ == fitted.trace_ and loaded.gram_ is None
    logits = model(x)[:, 0].detach()
    np.testing.assert_allclose(loaded.response(logits), fitted.response(logits), rtol=0, atol=0)
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a saved FeatureAnalysis"):
        FeatureAnalysis.load(tmp_path / "other.npz")


class _LogitDifference(torch.nn.Module):
    """ŷ_1 - ŷ_0 of a 2-logit model, sharing its parameters: the binary model the 2-logit features reduce to."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[:, 1:2] - out[:, 0:1]


def test_two_logit_features_are_def1_on_the_logit_difference_halved():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=generator)
    model = MLP(3, (12,), 2, generator=torch.Generator().manual_seed(6)).double()
    two_logits = FeatureAnalysis(k=6).fit(model, x, y)
    binary = FeatureAnalysis(k=6).fit(_LogitDifference(model), x, 2 * y - 1)
    np.testing.assert_allclose(two_logits.strengths_, binary.strengths_ / 2, rtol=1e-8)
    np.testing.assert_allclose(np.abs(two_logits.U_.T @ binary.U_), np.eye(6), atol=1e-6)  # same features, up to sign
    logits = model(x).detach()
    np.testing.assert_allclose(
        np.abs(two_logits.response(logits)), np.abs(binary.response(logits[:, 1] - logits[:, 0])) / 2, rtol=1e-8
    )


def test_a_ten_class_model_analyses_with_sorted_non_negative_strengths():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(80, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (80,), generator=generator)
    model = MLP(5, (16,), 10, generator=torch.Generator().manual_seed(4)).double()
    analysis = FeatureAnalysis(k=6).fit(model, x, y)
    assert np.all(analysis.strengths_ >= 0) and np.all(np.diff(analysis.strengths_) <= 1e-12)
    assert analysis.response(model(x).detach()).shape == (6,)
    table, _ = starvation_report(model, x, y, groups=y % 2, attributes={"first input": x[:, 0]}, k=6)
    assert list(table["feature"]) == [1, 2, 3, 4, 5, 6] and "alignment_first input" in table
    with pytest.raises(ValueError, match="integer class labels"):
        FeatureAnalysis(k=3).fit(model, x, y.double() + 0.5)


def test_fits_report_their_progress():
    x, y, _, _ = _planted_shortcut(100)
    model = MLP(8, (8,), 1, generator=torch.Generator().manual_seed(1)).double()
    seen = []
    FeatureAnalysis(k=3, method="matrix_free", progress=lambda stage, count: seen.append((stage, count))).fit(
        model, x, y
    )
    assert seen and seen[-1][0].startswith("Lanczos") and seen[-1][1] == len(seen)
    FeatureAnalysis(k=3, progress=True).fit(model, x, y)  # a status line on stderr, no error
