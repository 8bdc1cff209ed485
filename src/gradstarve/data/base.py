"""The container every data set returns: inputs, labels and per-example environment / group metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LabelledData:
    """One split of a data set, held as tensors.

    Attributes:
        x: ``(n, ...)`` float inputs.
        y: ``(n,)`` int64 class labels in ``{0, ..., C-1}`` (binary tasks: ``{0, 1}``; the paper's ``±1`` labels are
            ``2 y - 1``, see :meth:`signed_labels`).
        group: ``(n,)`` int64 id of each example's environment (Colored MNIST) or group (CelebA); 0 when a data set
            has neither.
        group_names: human-readable name of each group id, ``len(group_names) >= group.max() + 1``.
        name: the data set and split, e.g. ``"colored-mnist/train"``.
        metadata: free-form facts about the split (construction parameters, counts), JSON-serialisable.
    """

    x: torch.Tensor
    y: torch.Tensor
    group: torch.Tensor
    group_names: tuple[str, ...] = ("all",)
    name: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.group.shape != (n,):
            raise ValueError(
                f"{self.name or 'data'}: x has {n} examples but y has shape {tuple(self.y.shape)} and group "
                f"{tuple(self.group.shape)}; expected ({n},) for both"
            )
        if self.y.dtype != torch.int64 or self.group.dtype != torch.int64:
            raise ValueError(
                f"{self.name or 'data'}: y and group must be int64, got {self.y.dtype}, {self.group.dtype}"
            )
        if n and int(self.group.max()) >= len(self.group_names):
            raise ValueError(
                f"{self.name or 'data'}: group ids go up to {int(self.group.max())} but only "
                f"{len(self.group_names)} group names were given"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def signed_labels(self) -> torch.Tensor:
        """Labels in the paper's ``{-1, +1}`` convention (binary tasks only), as ``x``'s dtype."""
        if len(self) and int(self.y.max()) > 1:
            raise ValueError(f"{self.name}: signed labels need a binary task, found label {int(self.y.max())}")
        return (2 * self.y - 1).to(self.x.dtype)

    def group_counts(self) -> torch.Tensor:
        """``(n_groups,)`` number of examples in each group."""
        return torch.bincount(self.group, minlength=self.n_groups)

    def subset(self, index: torch.Tensor | Sequence[int] | slice, name: str | None = None) -> LabelledData:
        """The examples at ``index`` (a slice, an index tensor or a boolean mask)."""
        return LabelledData(
            self.x[index], self.y[index], self.group[index], self.group_names, name or self.name, dict(self.metadata)
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LabelledData:
        """Move the tensors (and cast ``x`` to ``dtype`` if given)."""
        return LabelledData(
            self.x.to(device=device, dtype=dtype),
            self.y.to(device),
            self.group.to(device),
            self.group_names,
            self.name,
            dict(self.metadata),
        )

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole split as one ``(x, y, group)`` batch, the format every algorithm's ``update`` takes."""
        return self.x, self.y, self.group
