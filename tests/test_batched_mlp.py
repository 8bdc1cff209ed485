"""BatchedMLP: S stacked networks behave exactly like S separate MLPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradstarve.models import MLP
from gradstarve.models.batched_mlp import BatchedMLP


def separate_models(n: int, **kwargs) -> list[MLP]:
    return [MLP(2, generator=torch.Generator().manual_seed(seed), **kwargs).double() for seed in range(n)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden": (8,)},
        {"hidden": (6, 5), "activation": "tanh"},
        {"hidden": (7,), "batch_norm": True},
        {"hidden": (4,), "bias": False},
    ],
)
def test_forward_matches_separate_models_in_train_and_eval_mode(kwargs):
    models = separate_models(3, **kwargs)
    batched = BatchedMLP.from_models(models)
    x = torch.randn(3, 11, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    for mode in (True, False):
        batched.train(mode)
        for m in models:
            m.train(mode)
        out = batched(x)
        for s, model in enumerate(models):
            torch.testing.assert_close(out[s], model(x[s]), rtol=1e-12, atol=1e-12)
    for s, model in enumerate(models):  # round trip, batch-norm statistics included
        back = batched.model(s)
        expected, restored = model.state_dict(), back.state_dict()
        for name in expected:
            if not name.endswith("num_batches_tracked"):  # a counter the momentum-based statistics never use
                torch.testing.assert_close(expected[name], restored[name], rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_training_equals_sequential_training(optimizer):
    """50 full-batch steps with SGD (momentum, weight decay) or Adam: parameters agree to 1e-5."""
    n_models, steps = 4, 50
    models = separate_models(n_models, hidden=(16,))
    batched = BatchedMLP.from_models(models)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(n_models, 30, 2, dtype=torch.float64, generator=generator)
    y = torch.where(torch.rand(n_models, 30, generator=generator) < 0.5, -1.0, 1.0).double()

    def make(params):
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=2e-4)
        return torch.optim.Adam(params, lr=3e-3)

    def loss_of(logits, labels):
        return nn.functional.softplus(-labels * logits).mean() + 0.003 * logits.square().mean()

    batched_optimizer = make(batched.parameters())
    for _ in range(steps):
        logits = batched(x)[..., 0]
        loss = sum(loss_of(logits[s], y[s]) for s in range(n_models))  # the sum keeps each network's gradient
        batched_optimizer.zero_grad()
        loss.backward()
        batched_optimizer.step()
    for s, model in enumerate(models):
        single_optimizer = make(model.parameters())
        for _ in range(steps):
            loss = loss_of(model(x[s])[:, 0], y[s])
            single_optimizer.zero_grad()
            loss.backward()
            single_optimizer.step()
        for a, b in zip(model.parameters(), batched.model(s).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_dropout_masks_follow_the_generator_and_are_off_in_eval_mode():
    batched = BatchedMLP(2, 2, (50,), dropout=0.7).double()
    nn.init.normal_(batched.weights[0], generator=torch.Generator().manual_seed(0))
    nn.init.normal_(batched.weights[1], generator=torch.Generator().manual_seed(1))
    x = torch.ones(2, 5, 2, dtype=torch.float64)
    first = batched(x, generator=torch.Generator().manual_seed(4))
    again = batched(x, generator=torch.Generator().manual_seed(4))
    other = batched(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and not torch.equal(first, other)
    batched.eval()
    assert torch.equal(batched(x), batched(x))


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        BatchedMLP(3, 2)(torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="different architecture"):
        BatchedMLP.from_models([MLP(2, (4,)), MLP(2, (4,), batch_norm=True)])
    with pytest.raises(ValueError, match="s must"):
        BatchedMLP(2, 2).model(2)
