"""The starvation diagnosis inside a PyTorch Lightning fit: ``StarvationCallback``.

A ``LightningModule`` (an MLP on a tabular task with a planted shortcut, trained with Spectral Decoupling's loss)
is fitted with the callback attached. The callback logs the responses z(t) (Eq. 8) to the features the module had
when fit started as ``starvation/z1 ..`` to the trainer's logger (CSV here; TensorBoard or any other logger the
same way), and writes ``starvation.md``, ``starvation.png`` and ``z_history.csv`` at the end of fit.

    pip install "gradstarve[lightning]"
    python examples/lightning_callback.py --out lightning-run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from gradstarve import SpectralDecouplingLoss
from gradstarve.integrations.lightning import StarvationCallback


class ShortcutClassifier(pl.LightningModule):
    """One logit; the loss is ``SpectralDecouplingLoss`` (Eq. 25), a drop-in for ``BCEWithLogitsLoss``."""

    def __init__(self, inputs: int, lam: float = 0.1, lr: float = 1e-2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, 1))
        self.criterion = SpectralDecouplingLoss(lam=lam)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.criterion(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def shortcut_table(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``(core, shortcut, 4 noise columns)``, labels in {0, 1} and the shortcut column; the shortcut agrees
    with the label for 90 % of the rows, the core is weak and noisy."""
    y = torch.randint(0, 2, (n,), generator=generator).float()
    signed = 2 * y - 1
    agrees = torch.rand(n, generator=generator) < 0.9
    shortcut = torch.where(agrees, signed, -signed)
    x = torch.cat(
        [
            (0.5 * signed + torch.randn(n, generator=generator))[:, None],
            shortcut[:, None],
            torch.randn(n, 4, generator=generator),
        ],
        dim=1,
    )
    return x, y, shortcut


def main(argv: list[str] | None = None) -> StarvationCallback:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="training rows")
    parser.add_argument("--probe", type=int, default=300, help="rows the callback tracks")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--every", type=int, default=10, help="log z every this many optimizer steps")
    parser.add_argument("--out", type=Path, default=Path("lightning-run"))
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y, shortcut = shortcut_table(args.n, generator)
    probe = slice(0, min(args.probe, args.n))
    callback = StarvationCallback(
        x[probe],
        2 * y[probe] - 1,
        k=5,
        every=args.every,
        attributes={"core": x[probe, 0], "shortcut": shortcut[probe]},
        report_dir=args.out / "starvation",
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        callbacks=[callback],
        logger=pl.loggers.CSVLogger(args.out, name="logs"),
        accelerator="auto",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128, shuffle=True)
    trainer.fit(ShortcutClassifier(x.shape[1]), loader)
    for sentence in callback.table.attrs["verdict"]:
        print(sentence)
    print("report:", ", ".join(str(path) for path in callback.files))
    return callback


if __name__ == "__main__":
    main()
