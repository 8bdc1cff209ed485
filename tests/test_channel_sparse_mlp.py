"""ChannelSparseMLP is the plain MLP: same parameters, outputs, gradients and training trajectory (to rounding), on
colour-layout inputs (fast path) and any other input (dense path)."""

from __future__ import annotations

import copy

import pytest
import torch

from gradstarve.models.channel_sparse_mlp import ChannelSparseMLP, group_by_active_channel
from gradstarve.models.mlp import MLP


def colour_layout(n: int, seed: int = 0, dtype: torch.dtype = torch.float32, blank_rows: int = 3) -> torch.Tensor:
    """``(n, 2, 14, 14)`` inputs whose digit (sparse random pixels) sits in one random channel, the other zero;
    the first ``blank_rows`` examples are all zero."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 14, 14, generator=generator) * (torch.rand(n, 14, 14, generator=generator) < 0.3)
    color = torch.randint(0, 2, (n,), generator=generator)
    x = torch.zeros(n, 2, 14, 14)
    x[torch.arange(n), color] = pixels
    x[:blank_rows] = 0
    return x.to(dtype)


def pair(
    dtype: torch.dtype = torch.float32, hidden=(300, 300), block_rows: int | None = 64
) -> tuple[MLP, ChannelSparseMLP]:
    """The plain MLP and ChannelSparseMLP with the same initialisation; the latter in blocks of ``block_rows`` rows
    (float32 size; ``None``: one block)."""
    dense = MLP(392, hidden, 1, init="xavier", generator=torch.Generator().manual_seed(1)).to(dtype)
    block_bytes = None if block_rows is None else block_rows * max(hidden) * 4
    generator = torch.Generator().manual_seed(1)
    sparse = ChannelSparseMLP(2, 392, hidden, 1, init="xavier", generator=generator, block_bytes=block_bytes)
    return dense, sparse.to(dtype)


def forward_backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list]:
    model.zero_grad()
    out = model(x)
    torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], y).backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_same_parameters_and_state_dict_as_mlp():
    dense, sparse = pair()
    assert list(dense.state_dict()) == list(sparse.state_dict())
    for a, b in zip(dense.state_dict().values(), sparse.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("block_rows", [None, 64])
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_outputs_and_gradients_equal_the_plain_mlp(dtype, rtol, block_rows):
    dense, sparse = pair(dtype, block_rows=block_rows)
    x = colour_layout(500, dtype=dtype)
    y = (torch.arange(500) % 2).to(dtype)
    reference_out, reference_grads = forward_backward(dense, x, y)
    for _ in range(3):  # the first call groups the rows, the next ones reuse the cached grouping
        out, grads = forward_backward(sparse, x, y)
        torch.testing.assert_close(out, reference_out, rtol=rtol, atol=rtol * float(reference_out.abs().max()))
        for g, ref in zip(grads, reference_grads, strict=True):
            torch.testing.assert_close(g, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))
    assert sparse._grouping is not None and sparse._grouping[2] is not None  # the fast path was taken


def test_grouping_puts_each_row_in_its_channel():
    x = colour_layout(200, seed=3)
    grouping = group_by_active_channel(x, 2)
    flat = x.reshape(200, 2, -1)
    channel = flat.ne(0).any(2).to(torch.int8).argmax(1)
    assert [len(rows) for rows in grouping.inputs] == torch.bincount(channel, minlength=2).tolist()
    grouped = torch.cat(grouping.inputs)
    for i in range(200):
        assert torch.equal(grouped[grouping.inverse[i]], flat[i, channel[i]])
    gray = torch.full((4, 2, 3), 0.5)
    assert group_by_active_channel(gray, 2) is None
    with pytest.raises(ValueError, match="channels"):
        group_by_active_channel(torch.zeros(4, 5), 2)


def test_training_trajectory_equals_the_plain_mlp():
    """40 full-batch Adam steps in float64: parameters agree to 1e-10 relative. (In float32 one step agrees to
    rounding, see above, but a trajectory can separate wherever Adam's normalised first updates turn a gradient
    that is rounding noise into a full step of size lr: a property of float32 Adam, not of the model.)"""
    dense, sparse = pair(torch.float64, hidden=(64, 64), block_rows=100)
    x = colour_layout(400, seed=5, dtype=torch.float64)
    y = (torch.rand(400, generator=torch.Generator().manual_seed(6)) < 0.5).to(torch.float64)
    optimisers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (dense, sparse)]
    for _ in range(40):
        for model, optimiser in zip((dense, sparse), optimisers, strict=True):
            forward_backward(model, x, y)
            optimiser.step()
    with torch.no_grad():
        for a, b in zip(dense.parameters(), sparse.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10 * float(a.abs().max()))


def test_other_inputs_take_the_dense_path_and_are_identical():
    dense, sparse = pair()
    gray = colour_layout(50).sum(1, keepdim=True).expand(50, 2, 14, 14) / 2
    for _ in range(3):
        assert torch.equal(sparse(gray), dense(gray))  # same computation on the dense path (one block)
    assert sparse._grouping[2] is None
    sparse.eval()
    x = colour_layout(50)
    for _ in range(3):
        assert torch.equal(sparse(x), dense(x))  # evaluation never caches
    assert sparse._grouping[0] is not x
    big = colour_layout(300).sum(1, keepdim=True).expand(300, 2, 14, 14) / 2  # dense path in 5 blocks of 64
    torch.testing.assert_close(sparse(big), dense(big), rtol=2e-5, atol=1e-6)


def test_block_rows_follow_the_precision_and_the_device():
    model = ChannelSparseMLP(2, 392, (300, 300))
    x = torch.zeros(10, 392)
    assert model.block_rows(x) == 2048
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.block_rows(x) == 4096  # half the bytes per value
    assert model.block_rows(x.double()) == 1024
    assert ChannelSparseMLP(2, 392, (300, 300), block_bytes=None).block_rows(x) is None
    with pytest.raises(ValueError, match="block_bytes"):
        ChannelSparseMLP(2, 392, block_bytes=0)


def test_in_place_change_of_the_input_invalidates_the_cache():
    dense, sparse = pair()
    x = colour_layout(100)
    sparse(x), sparse(x)
    x[:, [0, 1]] = x[:, [1, 0]].clone()  # swap the colours in place
    torch.testing.assert_close(sparse(x), dense(x), rtol=2e-5, atol=1e-6)


def test_copies_drop_the_cached_input():
    _, sparse = pair()
    x = colour_layout(100)
    sparse(x), sparse(x)
    clone = copy.deepcopy(sparse)
    assert clone._grouping is None
    torch.testing.assert_close(clone(x), sparse(x))


def test_bfloat16_autocast_runs_the_fast_path_close_to_dense():
    dense, sparse = pair()
    x = colour_layout(300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = dense(x).float()
        for _ in range(2):
            out = sparse(x).float()
    assert sparse._grouping[2] is not None
    torch.testing.assert_close(out, reference, rtol=0.05, atol=0.05 * float(reference.detach().abs().max()))


def test_invalid_channels_are_refused():
    with pytest.raises(ValueError, match="channels"):
        ChannelSparseMLP(3, 392)
