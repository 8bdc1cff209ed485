"""StarvationCallback in a real (tiny) Lightning fit on CPU, against an independent computation of z(t)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from gradstarve.analysis import FeatureAnalysis  # noqa: E402
from gradstarve.integrations.lightning import StarvationCallback  # noqa: E402


class TinyModule(pl.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _problem(n: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).float()
    return x, y


def test_callback_logs_z_of_the_initial_features_and_writes_the_report(tmp_path):
    torch.manual_seed(0)
    x, y = _problem()
    module = TinyModule(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)))
    initial = copy.deepcopy(module)
    callback = StarvationCallback(x, y, k=3, every=2, report_dir=tmp_path / "report")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = pl.Trainer(
        max_steps=6,
        callbacks=[callback],
        logger=pl.loggers.CSVLogger(tmp_path, name="logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, loader)

    # Independent reference: Def. 1 features of the untouched copy, z = U^T (Y ŷ) of the initial and final nets.
    reference = FeatureAnalysis(k=3).fit(initial, x, y)
    signs = 2 * y.numpy() - 1
    with torch.no_grad():
        z0 = reference.U_.T @ (signs * initial(x).numpy())
        z_end = reference.U_.T @ (signs * module(x).numpy())
    history = callback.history
    assert history["step"].tolist() == [0, 2, 4, 6]
    np.testing.assert_allclose(history.iloc[0, 1:].to_numpy(float), z0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.iloc[-1, 1:].to_numpy(float), z_end, rtol=1e-5, atol=1e-6)

    logged = pd.read_csv(next((tmp_path / "logs").rglob("metrics.csv")))
    rows = logged.dropna(subset=["starvation/z1"])
    assert rows["step"].tolist() == [0, 2, 4, 6]
    np.testing.assert_allclose(rows["starvation/z1"].to_numpy(), history["z1"].to_numpy(), rtol=1e-5)

    assert callback.table is not None and len(callback.table) == 3
    names = {path.name for path in callback.files}
    assert names == {"starvation.md", "starvation.png", "z_history.csv"}
    assert "Starvation diagnosis" in (tmp_path / "report" / "starvation.md").read_text()
    assert module.training  # the callback's evaluations leave the module in train mode


def test_callback_rejects_a_bad_schedule():
    x, y = _problem()
    with pytest.raises(ValueError, match="every"):
        StarvationCallback(x, y, every=0)
