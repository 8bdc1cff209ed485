"""Empirical risk minimisation: the mean cross-entropy, the baseline every other method modifies."""

from __future__ import annotations

from gradstarve.algorithms.base import Algorithm, Batch, Objective
from gradstarve.penalties import per_example_cross_entropy


class ERM(Algorithm):
    """ERM: minimise ``mean_i CE(ŷ_i, y_i)`` (Vapnik 1998).

    With ``hparams["weight_decay"] = wd`` this is the paper's Eq. 9 divided by ``n``, with theory ``lam = n · wd``
    (see :mod:`gradstarve.algorithms.base`). Hyperparameters: only the common ones.
    """

    registry_name = "erm"

    def objective(self, batch: Batch) -> Objective:
        nll = per_example_cross_entropy(self.model(batch.x), batch.y).mean()
        return Objective(loss=nll, nll=nll)
