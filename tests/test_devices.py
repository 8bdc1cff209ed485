"""``device=`` on the NTK and the analysis: the same numbers where the model is, a clear error where no GPU is; the
host-memory policy inside the NTK keeps freed blocks, gives large amounts back on exit and keeps small ones for
the next call."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from gradstarve import FeatureAnalysis, empirical_ntk, top_features
from gradstarve.devices import on_device, reuse_host_memory, torch_threads
from gradstarve.ntk import kernel_diagonal, ntrf

#: The host-memory policy's tests: it is glibc's heap that reuse_host_memory tunes.
glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the heap policy is glibc's"
)


def _model_and_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4, 1)).double()
    return model, torch.randn(7, 1, 6, dtype=torch.float64)


def test_device_cpu_gives_the_plain_jacobian_gram():
    model, x = _model_and_inputs()
    phi = ntrf(model, x)
    reference = phi @ phi.T  # independent: the explicit tangent features
    kernel = empirical_ntk(model, x, device="cpu")
    torch.testing.assert_close(kernel, reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kernel_diagonal(model, x, device="auto"), reference.diagonal(), rtol=1e-10, atol=1e-12)
    y = torch.tensor([1, -1, 1, 1, -1, -1, 1])
    features = top_features(model, x, y, 2, device="cpu")
    analysis = FeatureAnalysis(k=2, device="cpu").fit(model, x, y)
    torch.testing.assert_close(torch.as_tensor(analysis.strengths_), torch.as_tensor(features.strengths))


def test_on_device_leaves_the_callers_model_where_it_is():
    model, x = _model_and_inputs()
    same, (moved, absent) = on_device(model, (x, None), "cpu")
    assert same is model and moved is x and absent is None
    assert on_device(model, (x,), None) == (model, (x,))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_clear_error():
    model, x = _model_and_inputs()
    with pytest.raises(ValueError, match="asked for a GPU"):
        FeatureAnalysis(k=2, device="cuda")
    with pytest.raises(ValueError, match="asked for a GPU"):
        empirical_ntk(model, x, device="cuda:0")
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda"):
        empirical_ntk(model, x, device="gpu")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@glibc_only
def test_reuse_host_memory_keeps_freed_blocks_inside_and_returns_them_on_exit():
    size = 2**25  # 256 MB of float64, far above glibc's largest mmap threshold
    before = _resident_bytes()
    with reuse_host_memory():
        with reuse_host_memory():  # nested: only the outer exit gives memory back
            block = torch.ones(size, dtype=torch.float64)
            del block
            kept = _resident_bytes() - before
        kept_after_inner_exit = _resident_bytes() - before
    returned = _resident_bytes() - before
    assert kept > 2**27, f"freed memory should stay inside the context, {kept / 2**20:.0f} MB did"
    assert kept_after_inner_exit > 2**27, "the inner exit should not give memory back"
    assert returned < 2**26, f"memory should be returned on exit, {returned / 2**20:.0f} MB was kept"


@glibc_only
def test_the_next_kernel_of_a_small_model_reuses_the_memory_of_the_last_unfaulted():
    # a fresh interpreter, whose heap holds little free memory before (the test session's could hold anything); a
    # conv net's kernel at n = 600 allocates and frees ~40 MB (features, patches, scratch), far below the 128 MiB kept
    script = textwrap.dedent(
        """
        import resource
        import torch
        from torch import nn
        from gradstarve import empirical_ntk

        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        torch.manual_seed(0)
        convs = [nn.Conv2d(2, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(), nn.Flatten()]
        model = nn.Sequential(*convs, nn.Linear(1152, 1)).double()
        x = torch.randn(600, 2, 16, 16, dtype=torch.float64)
        start = faults()
        empirical_ntk(model, x)
        first = faults()
        empirical_ntk(model, x)
        print(first - start, faults() - first)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    first, second = (int(count) for count in result.stdout.split()[-2:])
    # returning every free page on exit, the second call faults in about as many pages as the first (15 k of 17 k
    # measured); kept, a tenth of them
    assert second < first / 4, f"the second kernel faulted {second} pages in, the first {first}"


def test_torch_threads_holds_inside_and_restores_even_after_an_error():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"), torch_threads(bad):
            pass
