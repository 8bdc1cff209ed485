"""The Ray backend (Ray Tune on a local 2-CPU Ray instance, started once for this module): the same run folders and
the same results table as the local backend, resuming a partial run and skipping finished ones."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from gradstarve.experiments import sweep
from gradstarve.experiments.train import read_metrics, train

ray = pytest.importorskip("ray")

SPEC = sweep.SweepSpec(("synthetic",), ("erm", "sd"), (0, 1), n_hparams=1, steps=30, eval_every=10)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_matches_the_local_backend_and_resumes(tmp_path, local_ray):
    local = sweep.launch(tmp_path / "local", SPEC, workers=0)
    assert local.count("done") == 8

    ray_dir = tmp_path / "ray"
    sweep.save_spec(ray_dir, SPEC)
    partial = sweep.plan(SPEC)[3]
    train(partial.config, sweep.runs_root(ray_dir), max_steps=15)  # interrupted: checkpoint at step 10
    events, lock = [], threading.Lock()

    def on_event(event):  # holds a lock, as a progress display does: Tune must not need to pickle it
        with lock:
            events.append(event)

    summary = sweep.launch(ray_dir, backend="ray", workers=2, threads_per_run=1, on_event=on_event)
    assert summary.count("done") == 8, summary.outcomes
    assert sorted(e.folder_name for e in events if e.kind == "finished") == sorted(
        r.folder_name for r in sweep.plan(SPEC)
    )
    assert [row["step"] for row in read_metrics(sweep.runs_root(ray_dir) / partial.folder_name)] == [0, 10, 20, 30]

    tables = [sweep.collect(folder).table for folder in (tmp_path / "local", ray_dir)]
    assert len(tables[0]) == 2 * 5  # 2 algorithms x 5 rules
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=False, rtol=0, atol=1e-6)
    local_md = (tmp_path / "local" / "results" / "results.md").read_text()
    assert local_md == (ray_dir / "results" / "results.md").read_text()

    again = sweep.launch(ray_dir, backend="ray", workers=2)  # all finished: no trial is started
    assert again.count("skipped") == 8
