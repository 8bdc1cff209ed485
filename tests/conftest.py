"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def torch_threads(request):
    """Run a test at one and at two torch threads, the thread count restored afterwards: the NTK's kernel blocks take
    numpy's ``syrk`` (OpenBLAS) on the diagonal blocks at one thread and torch's products alone at more, so both
    paths."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
