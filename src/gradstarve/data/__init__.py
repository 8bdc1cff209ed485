"""Data sets, one file each. Every loader returns :class:`~gradstarve.data.base.LabelledData` splits: inputs,
labels and the environment / group id of every example. Nothing is ever downloaded implicitly."""

from gradstarve.data.base import LabelledData

__all__ = ["LabelledData"]
