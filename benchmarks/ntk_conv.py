"""Layer-wise empirical NTK of conv / norm networks against nngeometry, side by side in one process (issue 16).

    pip install --no-deps nngeometry==0.4        # benchmark-only; its torchvision requirement would not match torch
    python benchmarks/ntk_conv.py [--threads 1] [--reps 3] [--resnet]

Float64, eval mode; every model's kernel is computed by both libraries, timed ``reps`` times interleaved (the
minimum is reported), and compared (max relative difference). Models: the MLP 784-300-300-1 (n = 2,000), the CNN
Conv2d(2,16,3) -> Conv2d(16,32,3,s2) -> Linear(1152,64) -> Linear(64,1) (n = 1,000), the same CNN with BatchNorm, and
with ``--resnet`` our ResNet-18 at half width on 32 px inputs (n = 1,000; minutes). Results go to stdout as a
markdown table; the measured numbers live in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradstarve import ntk
from gradstarve.models.resnet import build_resnet


def models(resnet: bool, resnet_n: int = 1000) -> list[tuple[str, nn.Module, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    cnn = [nn.Conv2d(2, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(), nn.Flatten()]
    head = [nn.Linear(1152, 64), nn.ReLU(), nn.Linear(64, 1)]
    with_bn = [nn.Conv2d(2, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.BatchNorm2d(32)]
    out = [
        (
            "MLP 784-300-300-1, n = 2,000",
            nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 1)),
            torch.randn(2000, 784, generator=generator),
        ),
        (
            "CNN (conv, conv s2, linear 1152-64, linear), n = 1,000",
            nn.Sequential(*cnn, *head),
            torch.randn(1000, 2, 16, 16, generator=generator),
        ),
        (
            "the CNN with BatchNorm (eval), n = 1,000",
            nn.Sequential(*with_bn, nn.ReLU(), nn.Flatten(), *[nn.Linear(1152, 64), nn.ReLU(), nn.Linear(64, 1)]),
            torch.randn(1000, 2, 16, 16, generator=generator),
        ),
    ]
    if resnet:
        model = build_resnet("cpu", out_features=1, generator=generator)
        out.append(
            (
                f"ResNet-18 at half width, 32 px, n = {resnet_n:,}",
                model,
                torch.randn(resnet_n, 3, 32, 32, generator=generator),
            )
        )
    return out


def nngeometry_gram(model: nn.Module, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    from nngeometry.backend.torch_hooks.torch_hooks import TorchHooksJacobianBackend

    loader = DataLoader(TensorDataset(x), batch_size=batch)
    gram = TorchHooksJacobianBackend(model=model).get_gram_matrix(loader)
    return gram.reshape(x.shape[0], x.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--resnet", action="store_true", help="also our ResNet-18 (half width, 32 px): minutes")
    parser.add_argument("--resnet-n", type=int, default=1000, help="examples for the ResNet (default 1,000)")
    parser.add_argument("--only-resnet", action="store_true", help="skip the MLP and CNNs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | nngeometry (s) | ours (s) | speed-up | max relative difference |")
    print("|---|---|---|---|---|")
    cases = models(args.resnet or args.only_resnet, args.resnet_n)
    for name, model, x in cases[3:] if args.only_resnet else cases:
        model, x = model.double().eval(), x.double()
        ours, theirs = [], []
        for _ in range(args.reps):
            start = time.perf_counter()
            reference = nngeometry_gram(model, x)
            theirs.append(time.perf_counter() - start)
            start = time.perf_counter()
            kernel = ntk.empirical_ntk(model, x, method="layerwise")
            ours.append(time.perf_counter() - start)
        difference = float((kernel - reference).abs().max() / kernel.abs().max())
        print(f"| {name} | {min(theirs):.2f} | {min(ours):.2f} | {min(theirs) / min(ours):.2f}x | {difference:.1e} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS of the process: {peak:.2f} GiB; threads {args.threads}")


if __name__ == "__main__":
    main()
