"""Two-moons experiments: batched seeds equal sequential training, and short runs show starvation and SD's fix."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from gradstarve.experiments.reproduce.two_moons import MoonsReproduction, write_two_moons
from gradstarve.experiments.two_moons import (
    FIG2_SETTINGS,
    MoonsSetting,
    initial_models,
    moons_data,
    per_seed_loss,
    train_moons,
)
from gradstarve.models.batched_mlp import BatchedMLP


def test_batched_seeds_equal_sequential_training_after_50_steps():
    """Issue 6: parameters equal to 1e-5 after 50 steps (SGD with momentum and weight decay, SD on)."""
    setting = replace(FIG2_SETTINGS[2], hidden=(64,))
    seeds = [0, 1, 2]
    x, signs = moons_data(setting, seeds)
    batched = BatchedMLP.from_models(initial_models(setting, seeds))
    optimizer = torch.optim.SGD(batched.parameters(), lr=1e-2, momentum=0.9, weight_decay=2e-4)
    for _ in range(50):
        loss = per_seed_loss(batched(x)[..., 0], signs, setting.sd_lam).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for i, model in enumerate(initial_models(setting, seeds)):
        single = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=2e-4)
        for _ in range(50):
            logits = model(x[i])[:, 0]
            loss = nn.functional.softplus(-signs[i] * logits).mean() + setting.sd_lam / 2 * logits.square().mean()
            single.zero_grad()
            loss.backward()
            single.step()
        for a, b in zip(model.parameters(), batched.model(i).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def short_runs():
    """400 full-batch steps of Fig. 2's (b) and (c) on 3 seeds, 2-500-1 network (about 5 s)."""
    runs = {}
    for setting in FIG2_SETTINGS[1:]:
        runs[setting.name] = train_moons(replace(setting, steps=400), seeds=(0, 1, 2), k=7, record_every=50)
    return runs


def test_short_runs_show_sd_feeds_the_second_feature_and_widens_the_margin(short_runs):
    """After 400 steps on Δ > 0, measured on seeds 0-2: |z7| is (0.80, 1.59, 1.77) with weight decay and
    (2.72, 3.32, 4.32) with SD; |z2| (the dominant, label-aligned feature) 148 vs 61; the smallest distance from a
    training point to the boundary (0.091, 0.096, 0.111) vs (0.137, 0.128, 0.160). Asserted per seed with room."""
    wd, sd = short_runs["separable"], short_runs["separable-sd"]
    np.testing.assert_allclose(wd.label_alignment, sd.label_alignment, rtol=1e-9)  # same data and initialisations
    assert np.all(np.abs(sd.responses[:, -1, 6]) > 1.5 * np.abs(wd.responses[:, -1, 6]))  # feature 7 grows
    assert np.all(np.abs(sd.responses[:, -1, 1]) < 0.6 * np.abs(wd.responses[:, -1, 1]))  # feature 2 is held back
    assert np.all(sd.margin_min > wd.margin_min + 0.01), (wd.margin_min, sd.margin_min)
    assert np.all(sd.margin_mean >= wd.margin_mean)
    assert np.all(wd.train_accuracy == 1.0) and np.all(sd.train_accuracy == 1.0)


def test_result_shapes_and_recorded_steps(short_runs):
    run = short_runs["separable"]
    assert run.grid_logits.shape == (3, 100, 100)
    assert run.responses.shape == (3, 9, 7)
    assert run.steps.tolist() == list(range(0, 401, 50))
    assert run.strengths.shape == (3, 7) and np.all(np.diff(run.strengths, axis=1) <= 0)
    row = run.summary()
    assert row["seeds"] == 3 and 0 < row["margin_min_mean"] <= row["margin_mean_mean"]


def test_stochastic_settings_train(tmp_path):
    for setting in (
        MoonsSetting("d", steps=20, dropout=0.7, hidden=(32,)),
        MoonsSetting("b", steps=20, batch_norm=True, hidden=(32,)),
        MoonsSetting("a", steps=20, optimizer="adam", lr=3e-3, hidden=(32,), rotation=45.0),
    ):
        run = train_moons(setting, seeds=(0, 1), k=3, record_every=10)
        assert np.all(np.isfinite(run.grid_logits)) and run.responses.shape == (2, 3, 3)


def test_reproduction_writes_figures_and_table(tmp_path):
    config = MoonsReproduction(seeds=(0,), figures=(2,), quick=True)
    report = write_two_moons(tmp_path, config)
    names = sorted(path.name for path in report.files)
    assert names == ["fig2.pdf", "fig2.png", "two_moons.csv", "two_moons.json"]
    assert [row["setting"] for row in report.rows] == ["nonseparable", "separable", "separable-sd"]
    # A 500-unit net can interpolate the overlapping moons, so train accuracy says nothing here; the Fig. 2 message
    # is in the margins: SD widens the separable run's margin (0.23 vs 0.11 at seed 0), overlap narrows it.
    margin = {row["setting"]: row["margin_min_mean"] for row in report.rows}
    assert margin["separable-sd"] > 1.5 * margin["separable"] > 1.5 * margin["nonseparable"]


def test_bad_setting():
    with pytest.raises(ValueError, match="optimizer"):
        MoonsSetting("x", optimizer="rmsprop")


def test_fig2_panels_are_titled_with_the_margin_the_claim_is_about(short_runs):
    from gradstarve.experiments.reproduce.two_moons import plot_fig2

    runs = [short_runs["separable"], short_runs["separable-sd"]]
    titles = [ax.get_title() for ax in plot_fig2(runs).axes[: len(runs)]]
    for title, run in zip(titles, runs, strict=True):
        assert f"min distance {np.mean(run.margin_min):.3f}" in title  # the smallest distance, named
        assert f"mean {np.mean(run.margin_mean):.3f}" in title
