"""Tests of gradstarve.hparams and the ``gradstarve hparams`` command: completeness of the table, the published
values it must hold, deterministic seeded search inside the documented distributions, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gradstarve import hparams
from gradstarve.algorithms import ALGORITHMS
from gradstarve.cli import app
from gradstarve.hparams import (
    DATASETS,
    Choice,
    Fixed,
    IntLogUniform,
    IntUniform,
    LogUniform,
    PerClass,
    Uniform,
    Widths,
    default_hparams,
    hparam_specs,
    random_hparams,
)
from gradstarve.models import MLP

PAIRS = [(algorithm, dataset) for algorithm in ALGORITHMS for dataset in DATASETS]


def _build(algorithm: str, values: dict):
    model = MLP(3, (4,), 1, generator=torch.Generator().manual_seed(0))
    return ALGORITHMS[algorithm](model, values, 2)


@pytest.mark.parametrize(("algorithm", "dataset"), PAIRS)
def test_every_pair_has_complete_documented_json_hparams(algorithm, dataset):
    specs = hparam_specs(algorithm, dataset)
    values = default_hparams(algorithm, dataset)
    assert list(values) == list(specs)
    assert json.loads(json.dumps(values)) == values
    for name, spec in specs.items():
        assert spec.doc, name
        assert str(spec.search), name
    assert ("steps" in values) != ("epochs" in values)  # exactly one training length
    _build(algorithm, values)  # every hyperparameter the algorithm requires is there and valid
    for seed in range(3):
        _build(algorithm, random_hparams(algorithm, dataset, seed))


def _inside(distribution, value) -> bool:
    if isinstance(distribution, Fixed):
        return value == distribution.value
    if isinstance(distribution, LogUniform | Uniform):
        return distribution.low <= value <= distribution.high
    if isinstance(distribution, IntLogUniform):
        return isinstance(value, int) and distribution.low <= value < distribution.high
    if isinstance(distribution, IntUniform):
        return isinstance(value, int) and distribution.low <= value <= distribution.high
    if isinstance(distribution, Choice):
        return value in distribution.options
    if isinstance(distribution, PerClass):
        return all(_inside(d, v) for d, v in zip(distribution.distributions, value, strict=True))
    if isinstance(distribution, Widths):
        return len(set(value)) == 1 and 2**distribution.low_exp <= value[0] <= 2**distribution.high_exp
    raise AssertionError(f"unknown distribution {distribution!r}")


@pytest.mark.parametrize(("algorithm", "dataset"), PAIRS)
def test_random_search_is_seeded_and_stays_inside_the_documented_distributions(algorithm, dataset):
    specs = hparam_specs(algorithm, dataset)
    draws = [random_hparams(algorithm, dataset, seed) for seed in range(8)]
    assert random_hparams(algorithm, dataset, 3) == draws[3]
    for draw in draws:
        for name, value in draw.items():
            assert _inside(specs[name].search, value), (name, value, specs[name].search)
    for name, spec in specs.items():
        if not isinstance(spec.search, Fixed):
            assert len({json.dumps(draw[name]) for draw in draws}) > 1, name  # it is actually searched


def test_a_seed_draws_the_same_shared_hyperparameter_for_every_algorithm():
    lrs = {random_hparams(algorithm, "synthetic", 11)["lr"] for algorithm in ALGORITHMS}
    assert len(lrs) == 1
    assert random_hparams("erm", "synthetic", 11)["lr"] != random_hparams("erm", "synthetic", 12)["lr"]


def test_log_uniform_draws_cover_the_range_evenly_in_log_space():
    draws = np.log10([LogUniform(1e-4, 1e-2).sample(np.random.default_rng(seed)) for seed in range(2000)])
    assert draws.min() >= -4 and draws.max() <= -2
    assert abs(draws.mean() + 3) < 0.05  # mean of U(-4, -2); its standard error is 0.013


def test_published_values():
    irm = default_hparams("irm", "colored-mnist")  # paper Table 3 = the IRM reference code
    assert irm["hidden"] == [390, 390]
    assert irm["l2_weight"] == 0.00110794568
    assert irm["lr"] == 0.0004898536566546834
    assert irm["irm_anneal_steps"] == 190
    assert irm["irm_lambda"] == 91257.18613115903
    assert irm["irm_lambda_before"] == 1.0
    assert irm["steps"] == 501
    erm = default_hparams("erm", "colored-mnist")
    assert (erm["hidden"], erm["lr"], erm["l2_weight"], erm["weight_decay"], erm["steps"]) == (
        [300, 300],
        1e-4,
        0,
        0,
        1001,
    )
    sd = default_hparams("sd", "colored-mnist")
    assert sd["sd_lam"] == pytest.approx(2 * 2e-5, rel=1e-15)  # released sd_coef 2e-5 on mean(ŷ²), no 1/2
    assert (sd["sd_schedule"], sd["sd_anneal_steps"], sd["steps"], sd["lr"]) == ("paper_released", 450, 2001, 1e-4)
    moons = default_hparams("sd", "two-moons")
    assert moons["sd_lam"] == pytest.approx(2 * 0.003, rel=1e-15)
    assert (moons["optimizer"], moons["lr"], moons["momentum"], moons["weight_decay"]) == ("sgd", 1e-2, 0.9, 2e-4)
    assert (moons["hidden"], moons["steps"]) == ([500], 10_000)
    celeba = default_hparams("sd", "celeba")  # App. A.3
    assert (celeba["optimizer"], celeba["lr"], celeba["batch_size"]) == ("adam", 1e-4, 128)
    assert celeba["sd_lam"] == [0.088, 0.012] and celeba["sd_gamma"] == [0.44, 2.5]
    assert "momentum" not in celeba
    assert default_hparams("group_dro", "celeba")["groupdro_eta"] == 0.01
    assert default_hparams("group_dro", "celeba")["weight_decay"] == 0.1
    lff = default_hparams("lff", "celeba")
    assert (lff["lff_q"], lff["lff_ema"]) == (0.7, 0.7)
    jtt = default_hparams("jtt", "celeba")
    assert (jtt["jtt_upweight"], jtt["jtt_first_stage_epochs"]) == (50.0, 1)


def test_defaults_are_fresh_copies():
    first = default_hparams("sd", "celeba")
    first["sd_lam"].append(1.0)
    assert default_hparams("sd", "celeba")["sd_lam"] == [0.088, 0.012]


def test_unknown_names_and_bad_seeds_are_rejected():
    with pytest.raises(ValueError, match="unknown algorithm 'rex'; known algorithms: erm, sd, irm, vrex"):
        default_hparams("rex", "celeba")
    with pytest.raises(ValueError, match="unknown dataset 'cmnist'; known datasets: two-moons, colored-mnist, celeba"):
        random_hparams("erm", "cmnist", 0)
    with pytest.raises(ValueError, match="seed"):
        random_hparams("erm", "celeba", -1)
    assert hparams.describe([0.088, 0.012]) == "[0.088, 0.012]"


def test_cli_prints_the_table_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["hparams", "irm", "colored-mnist"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "91257.18613115903" in result.output and "irm_anneal_steps" in result.output
    result = runner.invoke(app, ["hparams", "sd", "celeba", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == default_hparams("sd", "celeba")
    result = runner.invoke(app, ["hparams", "sd", "celeba", "--json", "--seed", "4"])
    assert json.loads(result.output) == random_hparams("sd", "celeba", 4)
    result = runner.invoke(app, ["hparams", "dro", "celeba"])
    assert result.exit_code != 0
    assert "known algorithms" in result.output
