"""Every NTK implementation against the plain Jacobian one (``ntrf @ ntrf.T``), in float64 with stated tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradstarve import ntk, theory
from gradstarve.models import MLP

REL = 1e-10  # layerwise vs jacobian vs Φ Φ^T, relative to max |K|


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_ntk(model: nn.Module, x: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    phi = ntk.ntrf(model, x)
    phi2 = phi if x2 is None else ntk.ntrf(model, x2)
    if phi.ndim == 2:
        return phi @ phi2.T
    return torch.einsum("iap,jbp->ijab", phi, phi2)


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float = REL) -> None:
    assert a.shape == b.shape
    scale = float(b.abs().max())
    assert float((a - b).abs().max()) <= rel * scale, float((a - b).abs().max()) / scale


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "softplus", "sigmoid", "elu", "leaky_relu", "silu"])
@pytest.mark.parametrize("hidden", [(), (7,), (5, 6), (4, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_layerwise_equals_jacobian_equals_ntrf_gram(activation, hidden, bias):
    model = MLP(4, hidden, 1, activation=activation, bias=bias, generator=gen(1)).double()
    x = torch.randn(9, 4, dtype=torch.float64, generator=gen(2))
    x2 = torch.randn(5, 4, dtype=torch.float64, generator=gen(3))
    for other in (None, x2):
        reference = reference_ntk(model, x, other)
        assert_close(ntk.empirical_ntk(model, x, x2=other, method="layerwise"), reference)
        assert_close(ntk.empirical_ntk(model, x, x2=other, method="jacobian"), reference)


@pytest.mark.parametrize("multi_output", ["full", "trace"])
def test_multi_output_modes(multi_output):
    model = MLP(3, (6, 5), 3, activation="tanh", generator=gen(4)).double()
    x = torch.randn(8, 3, dtype=torch.float64, generator=gen(5))
    x2 = torch.randn(4, 3, dtype=torch.float64, generator=gen(6))
    for other in (None, x2):
        full = reference_ntk(model, x, other)
        reference = full if multi_output == "full" else torch.einsum("ijaa->ij", full)
        for method in ("layerwise", "jacobian"):
            result = ntk.empirical_ntk(model, x, x2=other, method=method, multi_output=multi_output)
            assert_close(result, reference)
    assert ntk.empirical_ntk(model, x).shape == (8, 8, 3, 3)


def test_symmetric_full_output_block_mirroring_transposes_outputs_too():
    """K(x_j, x_i)_{ab} = K(x_i, x_j)_{ba}: chunked symmetric blocks must mirror both pairs of indices."""
    model = MLP(3, (5,), 2, generator=gen(7)).double()
    x = torch.randn(11, 3, dtype=torch.float64, generator=gen(8))
    assert_close(ntk.empirical_ntk(model, x, chunk_size=3), reference_ntk(model, x))


@pytest.mark.parametrize("method", ["layerwise", "jacobian"])
def test_chunked_equals_unchunked(method):
    model = MLP(4, (6, 5), 1, generator=gen(9)).double()
    x = torch.randn(23, 4, dtype=torch.float64, generator=gen(10))
    x2 = torch.randn(7, 4, dtype=torch.float64, generator=gen(11))
    for other in (None, x2):
        whole = ntk.empirical_ntk(model, x, x2=other, method=method, chunk_size=10_000)
        for chunk in (1, 4, 9):
            assert_close(ntk.empirical_ntk(model, x, x2=other, method=method, chunk_size=chunk), whole, 1e-13)


def test_large_symmetric_layerwise_uses_triangular_blocks_correctly(torch_threads):
    model = MLP(3, (8,), 1, generator=gen(12)).double()
    x = torch.randn(1500, 3, dtype=torch.float64, generator=gen(13))
    kernel = ntk.empirical_ntk(model, x)  # 1,500 examples: 6 row blocks, lower triangle mirrored
    assert torch.equal(kernel, kernel.T)
    rows = torch.arange(0, 1500, 97)
    assert_close(kernel[rows][:, rows], reference_ntk(model, x[rows]))


def test_sequential_with_flatten_dropout_and_frozen_layers():
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 5),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(5, 4),
        nn.Tanh(),
        nn.Linear(4, 1),
    ).double()
    model[1].bias.requires_grad_(False)  # frozen bias
    model[4].weight.requires_grad_(False)  # frozen weight, trainable bias
    model.train()  # dropout is switched off for the NTK (eval mode) and the mode is restored
    x = torch.randn(10, 2, 3, dtype=torch.float64, generator=gen(14))
    assert ntk.linear_stack(model) is not None
    reference = reference_ntk(model, x)
    assert_close(ntk.empirical_ntk(model, x, method="layerwise"), reference)
    assert_close(ntk.empirical_ntk(model, x, method="jacobian"), reference)
    assert model.training
    assert ntk.ntrf(model, x).shape == (10, 6 * 5 + 4 + 4 + 1)  # trainable: W1, b2, W3, b3


def test_models_beyond_plain_linear_stacks_take_the_structured_layerwise_path():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1, generator=gen(15))
        model[1].running_var.uniform_(0.5, 2, generator=gen(16))
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen(17))
    assert ntk.linear_stack(model) is None  # not the MLP fast path, but the structured one (tests/test_ntk_structured)
    assert_close(ntk.empirical_ntk(model, x), reference_ntk(model, x))
    assert_close(ntk.empirical_ntk(model, x, method="layerwise"), reference_ntk(model, x))


def test_dtype_option_computes_in_float64_from_a_float32_model():
    model = MLP(3, (5,), 1, generator=gen(18))
    x = torch.randn(6, 3, generator=gen(19))
    kernel = ntk.empirical_ntk(model, x, dtype=torch.float64)
    assert kernel.dtype == torch.float64
    assert_close(kernel, reference_ntk(model.double(), x.double()))


def test_kernel_diagonal_matches_the_gram_diagonal():
    for model in (
        MLP(3, (5, 4), 2, generator=gen(20)).double(),
        nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)).double(),
    ):
        x = torch.randn(9, 3, dtype=torch.float64, generator=gen(21))
        diagonal = ntk.kernel_diagonal(model, x, chunk_size=4)
        assert_close(diagonal, ntk.empirical_ntk(model, x, multi_output="trace").diagonal())


# ---------------------------------------------------------------------------------------------- top features
def test_top_features_dense_and_matrix_free_match_full_eigh():
    model = MLP(4, (12, 8), 1, generator=gen(22)).double()
    x = torch.randn(60, 4, dtype=torch.float64, generator=gen(23))
    y = torch.where(torch.rand(60, generator=gen(24)) < 0.5, -1, 1)
    gram = ntk.empirical_ntk(model, x).numpy()
    signs = y.double().numpy()
    eigenvalues, vectors = np.linalg.eigh(signs[:, None] * gram * signs[None, :])
    top_values, top_vectors = eigenvalues[::-1][:6], vectors[:, ::-1][:, :6]
    top_vectors = top_vectors * np.where(top_vectors.sum(axis=0) < 0, -1.0, 1.0)
    for method, ntk_method in (("dense", "auto"), ("matrix_free", "layerwise"), ("matrix_free", "jacobian")):
        found = ntk.top_features(model, x, y, k=6, method=method, batch_size=16, ntk_method=ntk_method)
        np.testing.assert_allclose(found.eigenvalues, top_values, rtol=1e-8)
        np.testing.assert_allclose(found.U, top_vectors, atol=1e-8)
    assert ntk.top_features(model, x, y, k=6, method="matrix_free").matvecs > 0


def test_top_features_of_the_ntrf_equal_theory_features():
    """Def. 1 both ways: SVD of diag(y) Φ₀ (theory.features) and eigenvectors of Y K Y (ntk.top_features)."""
    model = MLP(3, (6,), 1, generator=gen(25)).double()
    x = torch.randn(15, 3, dtype=torch.float64, generator=gen(26))
    y = np.where(np.arange(15) % 3 == 0, -1.0, 1.0)
    U, s, _ = theory.features(ntk.ntrf(model, x).numpy(), y, k=5)
    found = ntk.top_features(model, x, y, k=5)
    np.testing.assert_allclose(found.strengths, s, rtol=1e-10)
    np.testing.assert_allclose(found.U, U, atol=1e-9)


# ---------------------------------------------------------------------------------------------- errors
def test_clear_errors():
    model = MLP(3, (4,), 1, generator=gen(27)).double()
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen(28))
    with pytest.raises(ValueError, match=r"float32"):
        ntk.empirical_ntk(model, x.float())
    with pytest.raises(ValueError, match="labels must be in"):
        ntk.top_features(model, x, torch.tensor([0, 1, 2, 1, 0]), k=2)
    with pytest.raises(ValueError, match="5 examples but y has 4"):
        ntk.top_features(model, x, torch.tensor([1, -1, 1, -1]), k=2)
    with pytest.warns(UserWarning, match="mapped"):
        ntk.top_features(model, x, torch.tensor([0, 1, 1, 0, 1]), k=2)
    with pytest.raises(ValueError, match="one output"):
        ntk.top_features(MLP(3, (4,), 2).double(), x, torch.tensor([1, -1, 1, -1, 1]), k=2, method="matrix_free")
    with pytest.raises(ValueError, match="k must be"):
        ntk.top_features(model, x, torch.tensor([1, -1, 1, -1, 1]), k=0)
    with pytest.raises(ValueError, match="method"):
        ntk.empirical_ntk(model, x, method="fast")
    with pytest.raises(ValueError, match="feature shape"):
        ntk.empirical_ntk(model, x, x2=torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="chunk_size"):
        ntk.empirical_ntk(model, x, chunk_size=0)
    frozen = MLP(3, (4,), 1).double().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        ntk.empirical_ntk(frozen, x)
    with pytest.raises(ValueError, match="is on"):
        ntk.empirical_ntk(model, x.to("meta"))


def test_non_finite_inputs_and_parameters_are_named_and_huge_finite_ones_are_not():
    model = MLP(3, (4,), 1, generator=gen(29)).double()
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen(30))
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = x.clone()
        broken[1, 2] = broken[3, 0] = bad
        with pytest.raises(ValueError, match="2 of its 5 examples hold NaN or infinity"):
            ntk.empirical_ntk(model, broken)
    huge = x.clone()
    huge[:, 0] = 1e308  # finite, though their sum overflows
    assert torch.isfinite(huge).all() and not torch.isfinite(huge.sum())
    reference = ntk.empirical_ntk(model, huge, method="jacobian")
    torch.testing.assert_close(ntk.empirical_ntk(model, huge), reference, rtol=1e-10, atol=0.0)
    diverged = MLP(3, (4,), 1, generator=gen(29)).double()
    with torch.no_grad():
        next(diverged.parameters())[0, 0] = float("nan")
    with pytest.raises(ValueError, match="parameters are not finite"):
        ntk.empirical_ntk(diverged, x)


def test_analytic_ntk_of_a_linear_model_and_of_a_one_hidden_layer_relu_net():
    """Closed forms, written in numpy: Θ(x, x') = xᵀx' + 1 for f = wᵀx + b; for f = vᵀ relu(Wx + a) + c,
    Θ = relu(Wx + a)ᵀ relu(Wx' + a) + 1 + Σ_h v_h² 1[h active at x] 1[h active at x'] (xᵀx' + 1)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    linear = torch.nn.Linear(4, 1).double()
    X = x.numpy()
    np.testing.assert_allclose(ntk.empirical_ntk(linear, x).numpy(), X @ X.T + 1, rtol=1e-12)

    net = torch.nn.Sequential(torch.nn.Linear(4, 9), torch.nn.ReLU(), torch.nn.Linear(9, 1)).double()
    W, a = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    v = net[2].weight.detach().numpy()[0]
    pre = X @ W.T + a
    hidden, active = np.maximum(pre, 0), (pre > 0).astype(float)
    expected = hidden @ hidden.T + 1 + ((active * v**2) @ active.T) * (X @ X.T + 1)
    for method in ("auto", "jacobian"):
        np.testing.assert_allclose(ntk.empirical_ntk(net, x, method=method).numpy(), expected, rtol=1e-10)
