"""The layer-wise NTK of conv / norm networks equals the plain per-example-Jacobian Gram (float64, 1e-10 relative),
for every supported layer type, a ResNet block with a strided 1x1 shortcut and BatchNorm, several outputs, frozen
parameters, two input sets and chunking; unsupported layers fall back (auto) or are named (layerwise)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from gradstarve import ntk
from gradstarve.models.resnet import BasicBlock, build_resnet
from gradstarve.ntk_structured import UnsupportedLayerError, gram_sum_into, unsupported_layer, upper_row_block_into


def jacobian_gram(model: nn.Module, x: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """The reference, written independently: per-example gradients by plain autograd, one example and output at a
    time, stacked and multiplied. ``(n, n2, c, c)``."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]

    def rows(inputs: torch.Tensor) -> torch.Tensor:
        out = []
        for example in inputs:
            f = model(example.unsqueeze(0)).reshape(-1)
            per_output = [
                torch.cat([g.reshape(-1) for g in torch.autograd.grad(fa, params, retain_graph=True)]) for fa in f
            ]
            out.append(torch.stack(per_output))
        return torch.stack(out)  # (n, c, P)

    a = rows(x)
    b = a if x2 is None else rows(x2)
    return torch.einsum("iap,jbp->ijab", a, b)


def settle(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-trivial running statistics and affine parameters for the norm layers, then eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 1.7 + 0.3)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.LayerNorm | nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def check(model: nn.Module, x: torch.Tensor, x2: torch.Tensor | None = None, **kwargs) -> None:
    reference = jacobian_gram(model, x, x2)
    c = reference.shape[2]
    full = ntk.empirical_ntk(model, x, x2=x2, method="layerwise", multi_output="full", **kwargs)
    if c == 1:
        torch.testing.assert_close(full, reference[:, :, 0, 0], rtol=1e-10, atol=1e-10 * reference.abs().max())
        return
    torch.testing.assert_close(full, reference, rtol=1e-10, atol=1e-10 * reference.abs().max())
    trace = ntk.empirical_ntk(model, x, x2=x2, method="layerwise", multi_output="trace", **kwargs)
    expected = reference.diagonal(dim1=2, dim2=3).sum(-1)
    torch.testing.assert_close(trace, expected, rtol=1e-10, atol=1e-10 * expected.abs().max())


torch.manual_seed(0)


def test_cnn_with_strided_conv_and_a_sizeable_linear_layer(torch_threads):
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.Tanh(),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 8), nn.GELU(), nn.Linear(8, 1),
    ).double()  # fmt: skip
    x = torch.randn(5, 2, 7, 7, dtype=torch.float64)
    check(model, x)
    check(model, x, torch.randn(3, 2, 7, 7, dtype=torch.float64))
    check(model, x, chunk_size=2)


def test_conv2d_with_uneven_kernel_stride_padding_dilation_and_groups():
    model = nn.Sequential(
        nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2), nn.ReLU(),
        nn.Conv2d(4, 3, 1, stride=(1, 2)), nn.Flatten(), nn.Linear(3 * 3 * 4, 2),
    ).double()  # fmt: skip
    x = torch.randn(6, 2, 7, 5, dtype=torch.float64)
    check(model, x)


class KeywordConv(nn.Conv2d):
    """A Conv2d subclass that passes its settings by keyword: its convolution is not the call ``nn.Conv2d`` makes,
    so its patches come from its recorded input instead of its forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(
            x, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation
        )


def test_convs_with_one_output_position_and_convs_called_by_keyword():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 1, groups=2), nn.ReLU(),  # 3 x 3 input: one position
        KeywordConv(4, 3, 1), nn.Flatten(), nn.Linear(3, 2),
    ).double()  # fmt: skip
    check(model, torch.randn(9, 2, 3, 3, dtype=torch.float64))


def test_batch_norm_layer_norm_group_norm_and_conv1d_with_several_outputs():
    model = nn.Sequential(
        nn.Conv1d(3, 4, 3, dilation=2), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 4, 2, groups=2),
        nn.GroupNorm(2, 4), nn.Flatten(), nn.LayerNorm(4 * 5), nn.Linear(20, 3),
    ).double()  # fmt: skip
    x = torch.randn(4, 3, 10, dtype=torch.float64)
    check(settle(model, x), x)


def test_batch_norm_2d_max_pool_and_frozen_parameters():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2)
    ).double()
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    settle(model, x)
    model[1].weight.requires_grad_(False)  # γ frozen, β trained
    model[0].bias.requires_grad_(False)
    check(model, x)


class Block(nn.Module):
    """Our ResNet's BasicBlock with a strided 1x1 shortcut and BatchNorm, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        shortcut = nn.Sequential(nn.Conv2d(3, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))
        self.block = BasicBlock(3, 4, stride=2, downsample=shortcut)
        self.head = nn.Linear(4 * 3 * 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).flatten(1))


def test_a_resnet_block_with_a_strided_shortcut():
    model = Block().double()
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    check(settle(model, x), x)


def test_our_resnet18_is_handled_layerwise():
    model = build_resnet("cpu", out_features=1, generator=torch.Generator().manual_seed(0)).double()
    assert unsupported_layer(model) is None
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    settle(model, x)
    reference = ntk.empirical_ntk(model, x, method="jacobian")
    layerwise = ntk.empirical_ntk(model, x, method="layerwise")
    torch.testing.assert_close(layerwise, reference, rtol=1e-10, atol=1e-10 * reference.abs().max())


class Scale(nn.Module):
    """A layer with a parameter of its own: not one the layer-wise NTK knows."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 2, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale).sum(dim=1, keepdim=True)


class InPlace(nn.Module):
    """In-place operations on layers' outputs (a ReLU, a residual addition): the recorded signals would be those of
    the changed tensors unless the NTK notices and copies them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 25, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h.relu_()
        out = self.norm(h)
        out += x[:, :1]
        return self.head(out.relu_().flatten(1))


def test_in_place_operations_after_a_layer_are_seen():
    model = settle(InPlace().double(), torch.randn(20, 2, 5, 5, dtype=torch.float64))
    check(model, torch.randn(40, 2, 5, 5, dtype=torch.float64))


def test_unsupported_layers_are_named(caplog):
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), Scale()).double()
    x = torch.randn(3, 2, dtype=torch.float64)
    assert "2 (Scale)" in unsupported_layer(model)
    with pytest.raises(UnsupportedLayerError, match=r"2 \(Scale\)"):
        ntk.empirical_ntk(model, x, method="layerwise")
    with caplog.at_level(logging.INFO, logger="gradstarve.ntk"):
        kernel = ntk.empirical_ntk(model, x)  # auto: the Jacobian path, logged with the layer's name
    assert "Scale" in caplog.text
    torch.testing.assert_close(kernel, jacobian_gram(model, x)[:, :, 0, 0], rtol=1e-10, atol=1e-12)
    batch_stats = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, track_running_stats=False), nn.Linear(2, 1))
    assert "no running statistics" in unsupported_layer(batch_stats)


def test_the_kernel_diagonal_of_a_conv_net_without_the_gram():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)
    ).double()  # fmt: skip
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    settle(model, x)
    expected = jacobian_gram(model, x).diagonal(dim1=2, dim2=3).sum(-1).diagonal()
    torch.testing.assert_close(ntk.kernel_diagonal(model, x, chunk_size=2), expected, rtol=1e-10, atol=1e-12)


def test_several_outputs_in_chunks_and_thousands_of_examples(torch_threads):
    # chunk_size=2: mirrored and exactly symmetric diagonal blocks in both multi-output modes, and two input sets;
    # 4,500 examples in one chunk: the kernel in 8 row blocks from the diagonal on, mirrored
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(6, 3)).double()
    x = torch.randn(5, 1, 5, dtype=torch.float64)
    check(model, x, chunk_size=2)
    check(model, x, torch.randn(3, 1, 5, dtype=torch.float64), chunk_size=2)
    full = ntk.empirical_ntk(model, x, method="layerwise", multi_output="full", chunk_size=2)
    assert torch.equal(full, full.permute(1, 0, 3, 2))  # K(x_i, x_j)_ab = K(x_j, x_i)_ba exactly
    tiny = nn.Sequential(nn.Conv1d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 1)).double()
    many = torch.randn(4500, 1, 5, dtype=torch.float64)
    per_example = torch.func.vmap(
        torch.func.jacrev(lambda p, e: torch.func.functional_call(tiny, p, (e[None],)).sum()), in_dims=(None, 0)
    )(dict(tiny.named_parameters()), many)
    jacobian = torch.cat([g.reshape(len(many), -1) for g in per_example.values()], dim=1)
    reference = jacobian @ jacobian.T
    kernel = ntk.empirical_ntk(tiny, many, method="layerwise")
    torch.testing.assert_close(kernel, reference, rtol=1e-10, atol=1e-10 * float(reference.detach().abs().max()))
    assert torch.equal(kernel, kernel.T)


@pytest.mark.parametrize("method", ["layerwise", "jacobian"])
def test_the_matrix_free_kernel_products_of_conv_nets(method):
    # K v from the kept per-layer features (layerwise) and from Jacobian-vector products, against the reference
    # Gram times v; mini-batches of 3 split the examples unevenly
    generator = torch.Generator().manual_seed(5)
    block = settle(Block().double(), torch.randn(7, 3, 6, 6, dtype=torch.float64))
    grouped = nn.Sequential(
        nn.Conv1d(2, 3, 2), nn.GroupNorm(1, 3), nn.ReLU(), nn.Flatten(), nn.Linear(9, 4), nn.Tanh(), nn.Linear(4, 1)
    ).double()  # fmt: skip
    for model, x in (
        (block, torch.randn(7, 3, 6, 6, dtype=torch.float64)),
        (grouped, torch.randn(7, 2, 4, dtype=torch.float64)),
    ):
        matvec, n = ntk.kernel_operator(model, x, batch_size=3, method=method)
        v = torch.randn(n, generator=generator, dtype=torch.float64).numpy()
        expected = (jacobian_gram(model, x)[:, :, 0, 0].detach() @ torch.from_numpy(v)).numpy()
        np.testing.assert_allclose(matvec(v), expected, rtol=1e-10, atol=1e-10 * abs(expected).max())


def test_the_matrix_free_layerwise_products_need_the_features_to_fit(monkeypatch, caplog):
    model = nn.Sequential(nn.Conv1d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 1)).double()
    x = torch.randn(6, 1, 5, dtype=torch.float64)
    monkeypatch.setattr("gradstarve.ntk_structured.feature_budget", lambda device, itemsize: 10)
    with pytest.raises(ValueError, match="third of the available memory"):
        ntk.kernel_operator(model, x, method="layerwise")
    with caplog.at_level(logging.INFO, logger="gradstarve.ntk"):
        matvec, _ = ntk.kernel_operator(model, x)  # auto: Jacobian-vector products, and it says why
    assert "do not fit" in caplog.text
    v = np.ones(6)
    expected = (jacobian_gram(model, x)[:, :, 0, 0].detach() @ torch.from_numpy(v)).numpy()
    np.testing.assert_allclose(matvec(v), expected, rtol=1e-10)
    with pytest.raises(UnsupportedLayerError, match="Scale"):
        ntk.kernel_operator(nn.Sequential(nn.Linear(2, 2), Scale()).double(), x[:, 0, :2], method="layerwise")


def test_gram_sum_into_writes_a_weighted_sum_of_hadamard_products_into_a_strided_view(torch_threads):
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), rng.normal(size=(3, 5)), rng.normal(size=(3, 1))]
    cols = [rng.normal(size=(6, 4)), rng.normal(size=(6, 2)), rng.normal(size=(6, 5)), rng.normal(size=(6, 1))]
    # terms: (L0 L0'^T) (a factor of ones), 2.5 (L1 L1'^T) ⊙ (R1 R1'^T), then the first without weight again
    expected = rows[0] @ cols[0].T + 2.5 * (rows[1] @ cols[1].T) * (rows[2] @ cols[2].T) + rows[3] @ cols[3].T
    kernel = torch.full((5, 10), float("nan"), dtype=torch.float64)
    view = kernel[1:4, 2:8]  # rows of stride 10: the result must land in place, the rest untouched
    t = [torch.from_numpy(a) for a in rows + cols]
    result = gram_sum_into(view, [(t[0], None), (t[1], t[2]), (t[3], None)], [(t[4], None), (t[5], t[6]), (t[7], None)],
                           [1.0, 2.5, 1.0])  # fmt: skip
    assert result.data_ptr() == view.data_ptr()
    np.testing.assert_allclose(kernel[1:4, 2:8].numpy(), expected, rtol=1e-13)
    outside = torch.ones_like(kernel, dtype=torch.bool)
    outside[1:4, 2:8] = False
    assert kernel[outside].isnan().all()
    # a Hadamard term first (written, not added), and a weighted plain term after it
    first = gram_sum_into(torch.empty(3, 6, dtype=torch.float64), [(t[1], t[2]), (t[0], None)],
                          [(t[5], t[6]), (t[4], None)], [1.0, -3.0])  # fmt: skip
    np.testing.assert_allclose(first.numpy(), (rows[1] @ cols[1].T) * (rows[2] @ cols[2].T) - 3 * rows[0] @ cols[0].T,
                               rtol=1e-13)  # fmt: skip
    # plus_one: 1 added to L L'^T, on a first Hadamard term, a later one and plain terms (first and later)
    inner, signal = rows[1] @ cols[1].T, rows[2] @ cols[2].T
    plain = rows[0] @ cols[0].T
    ones = gram_sum_into(torch.empty(3, 6, dtype=torch.float64), [(t[1], t[2]), (t[0], None), (t[1], t[2])],
                         [(t[5], t[6]), (t[4], None), (t[5], t[6])], [2.0, -3.0, 0.5], [True, True, True])  # fmt: skip
    np.testing.assert_allclose(ones.numpy(), 2 * (inner + 1) * signal - 3 * (plain + 1) + 0.5 * (inner + 1) * signal,
                               rtol=1e-13)  # fmt: skip
    dense_first = gram_sum_into(torch.empty(3, 6, dtype=torch.float64), [(t[0], None), (t[1], t[2])],
                                [(t[4], None), (t[5], t[6])], [2.0, 1.0], [True, False])  # fmt: skip
    np.testing.assert_allclose(dense_first.numpy(), 2 * (plain + 1) + inner * signal, rtol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gram_sum_into_a_diagonal_block_is_exactly_symmetric_and_in_place(torch_threads, dtype):
    # cols=None: the examples with themselves (numpy's syrk at one thread, torch's mm at two) against numpy in
    # float64, written into a strided view of a larger kernel, exactly symmetric, plus_one and scales included
    rng = np.random.default_rng(1)
    dense, left, right = rng.normal(size=(70, 9)), rng.normal(size=(70, 4)), rng.normal(size=(70, 3))
    terms = [(torch.from_numpy(a).to(dtype), None if b is None else torch.from_numpy(b).to(dtype))
             for a, b in [(left, right), (dense, None), (left, None)]]  # fmt: skip
    expected = 2 * (left @ left.T + 1) * (right @ right.T) + dense @ dense.T - 0.5 * (left @ left.T + 1)
    kernel = torch.full((80, 90), float("nan"), dtype=dtype)
    view = kernel[5:75, 10:80]
    result = gram_sum_into(view, terms, None, [2.0, 1.0, -0.5], [True, False, True])
    assert result.data_ptr() == view.data_ptr()
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(view.double().numpy(), expected, rtol=tolerance, atol=tolerance * abs(expected).max())
    assert torch.equal(view, view.T)
    outside = torch.ones_like(kernel, dtype=torch.bool)
    outside[5:75, 10:80] = False
    assert kernel[outside].isnan().all()
    with pytest.raises(ValueError, match="square"):
        gram_sum_into(kernel[:3, :4], terms, None)
    with pytest.raises(ValueError, match="as many column terms"):
        gram_sum_into(kernel[:3, :4], terms, terms[:1])
    # a row block from the diagonal on: its diagonal block as above, the rest a plain product, in one call
    block = kernel[:70, :80]
    wider = [(torch.cat([a, a[:10]]), None if b is None else torch.cat([b, b[:10]])) for a, b in terms]
    upper_row_block_into(block, terms, wider, [2.0, 1.0, -0.5], [True, False, True])
    np.testing.assert_allclose(
        block[:, :70].double().numpy(), expected, rtol=tolerance, atol=tolerance * abs(expected).max()
    )
    np.testing.assert_allclose(block[:, 70:].double().numpy(), expected[:, :10], rtol=tolerance,
                               atol=tolerance * abs(expected).max())  # fmt: skip
    assert torch.equal(block[:, :70], block[:, :70].T)
    with pytest.raises(ValueError, match="as many columns as rows"):
        upper_row_block_into(kernel[:3, :2], terms, terms)
