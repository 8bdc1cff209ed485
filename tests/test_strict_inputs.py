"""Typos and wrong kinds are errors that name the key and the closest valid name; a run folder is never reused
for other data."""

from __future__ import annotations

import pytest
import torch

from gradstarve.algorithms import ALGORITHMS
from gradstarve.data.base import LabelledData
from gradstarve.experiments.tasks import Task, _mlp_builder, load_task
from gradstarve.experiments.train import make_config, train
from gradstarve.hparams import default_hparams
from gradstarve.models import MLP


def model():
    return MLP(5, (8,), 1, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sd_lamda": 0.1}, "unknown hyperparameter 'sd_lamda'.*did you mean 'sd_lam'"),
        ({"lr": True}, "'lr' .* must be float or int, got True"),
        ({"lr": "0.1"}, "'lr' .* must be"),
        ({"sd_anneal_steps": 1.5}, "'sd_anneal_steps' .* must be int"),
        ({"lr": float("nan")}, "'lr'"),
    ],
)
def test_algorithms_refuse_unknown_names_and_wrong_kinds(change, message):
    hparams = {**default_hparams("sd", "synthetic"), **change}
    with pytest.raises(ValueError, match=message):
        ALGORITHMS["sd"](model(), hparams, 2)


def test_a_string_is_not_a_boolean_flag():
    hparams = {**default_hparams("irm", "synthetic"), "rescale_loss": "no"}
    with pytest.raises(ValueError, match=r"'rescale_loss' .* must be bool"):
        ALGORITHMS["irm"](model(), hparams, 2)


def test_per_class_hyperparameters_take_a_number_or_a_list():
    for lam in (0.1, 1, [0.1, 0.2]):
        ALGORITHMS["sd"](model(), {**default_hparams("sd", "synthetic"), "sd_lam": lam}, 2)
    with pytest.raises(ValueError, match="sd_lam"):
        ALGORITHMS["sd"](model(), {**default_hparams("sd", "synthetic"), "sd_lam": [0.1, "x"]}, 2)


def test_make_config_checks_kinds_and_task_options():
    with pytest.raises(ValueError, match=r"'hidden' .* must be list"):
        make_config("colored-mnist", "erm", overrides={"hidden": 300})
    with pytest.raises(ValueError, match=r"unknown option 'n_trian'.*did you mean 'n_train'"):
        make_config("colored-mnist", "erm", data={"n_trian": 200})
    with pytest.raises(ValueError, match=r"option 'val_fraction' .* must be float or int"):
        make_config("colored-mnist", "erm", data={"val_fraction": "0.1"})
    with pytest.raises(ValueError, match="unknown option 'n_trian'"):
        load_task("colored-mnist", {"n_trian": 200})


def _task(seed: int) -> Task:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=generator)
    y = (x[:, 0] > 0).long()
    data = LabelledData(x, y, torch.zeros(64, dtype=torch.int64), ("all",), "mine")
    return Task("synthetic", data, {"train": data}, _mlp_builder(5))


def test_a_finished_run_of_other_data_is_refused_not_returned(tmp_path):
    run = make_config("synthetic", "erm", overrides={"steps": 4}, eval_every=2)
    first = train(run, tmp_path, task=_task(0))
    assert train(run, tmp_path, task=_task(0)).skipped  # the same data: the finished run is reused
    with pytest.raises(ValueError, match="trained on other data"):
        train(run, tmp_path, task=_task(1))
    assert first.run_dir.exists()


def test_sweep_launch_checks_the_data_before_making_any_run_folder(tmp_path):
    from gradstarve.data.errors import MissingDataError
    from gradstarve.experiments import sweep

    spec = sweep.SweepSpec(("colored-mnist",), ("erm",), tuple(range(50)), n_hparams=2)
    with pytest.raises(MissingDataError, match="mnist"):
        sweep.launch(tmp_path / "sweep", spec, data_root=tmp_path / "no-data", workers=0)
    assert not sweep.runs_root(tmp_path / "sweep").exists()


def test_a_celeba_folder_with_a_header_only_metadata_file_is_an_error(tmp_path):
    from gradstarve.data.celeba import index_celeba
    from gradstarve.data.errors import CorruptDataError

    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "metadata.csv").write_text("image_id,identity,split,Blond_Hair,Male\n")
    with pytest.raises(CorruptDataError, match="no CelebA image"):
        index_celeba(tmp_path)
