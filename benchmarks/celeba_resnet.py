"""Timings for the CelebA parts: building / reloading the image cache, and ResNet training steps.

    python benchmarks/celeba_resnet.py cache --data-root ../shared/data/celeba [--resolution 64]
    python benchmarks/celeba_resnet.py step --preset cpu [--batch 128] [--resolution 64] [--device cuda] [--bf16]
        [--channels-last]
    python benchmarks/celeba_resnet.py torchvision   # where torchvision is installed (never a dependency)

``cache`` builds the cache in a fresh temporary folder (all three splits), then loads it again. ``step`` times one
forward + backward + Adam step of a preset's model on random data (median of ``--steps`` after two warm-ups).
``torchvision`` checks that torchvision's ResNet-18/50 state dicts load into ours and give the same outputs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.nn import functional

from gradstarve.data.celeba import augment, load_celeba
from gradstarve.models.resnet import PRESETS, build_resnet, load_pretrained, resnet18, resnet50


def time_cache(data_root: str, resolution: int) -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        splits = load_celeba(data_root, resolution=resolution, cache_dir=cache_dir, dtype=torch.uint8)
        built = time.perf_counter() - start
        start = time.perf_counter()
        load_celeba(data_root, resolution=resolution, cache_dir=cache_dir, dtype=torch.uint8, progress=False)
        reloaded_uint8 = time.perf_counter() - start
        start = time.perf_counter()
        load_celeba(data_root, resolution=resolution, cache_dir=cache_dir, progress=False)
        reloaded_float = time.perf_counter() - start
    for split, data in splits.items():
        print(f"{split}: {len(data)} images, groups {data.metadata['group_counts']}")
    print(
        f"build (decode all splits) {built:.1f} s; reload uint8 {reloaded_uint8:.2f} s; float32 {reloaded_float:.2f} s"
    )


def time_step(
    preset: str, batch: int, steps: int, device: str, bf16: bool, channels_last: bool, resolution: int | None = None
) -> None:
    generator = torch.Generator(device=device).manual_seed(0)
    resolution = resolution or PRESETS[preset].resolution
    model = build_resnet(preset, generator=torch.Generator().manual_seed(0)).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, resolution, resolution, device=device, generator=generator)
    y = torch.randint(0, 2, (batch, 1), device=device, generator=generator).float()
    times = []
    for _ in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        inputs = augment(x, generator).contiguous(memory_format=memory_format)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = functional.binary_cross_entropy_with_logits(model(inputs).float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times[2:])
    print(
        f"preset {preset} ({PRESETS[preset].description}) on {device}, batch {batch}, bf16={bf16}, "
        f"channels_last={channels_last}, {resolution} px, threads={torch.get_num_threads()}: {median * 1e3:.1f} ms per "
        f"augment+forward+backward+Adam step ({batch / median:.0f} images/s)"
    )


def compare_with_torchvision() -> None:
    import torchvision  # only here, never a dependency of gradstarve

    for ours, theirs in ((resnet18, torchvision.models.resnet18), (resnet50, torchvision.models.resnet50)):
        reference = theirs().eval()
        model = ours().eval()
        count = sum(p.numel() for p in reference.parameters())
        with tempfile.NamedTemporaryFile(suffix=".pth") as handle:
            torch.save(reference.state_dict(), handle.name)
            report = load_pretrained(model, handle.name)
        x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            difference = float((model(x) - reference(x)).abs().max())
        print(
            f"{ours.__name__}: torchvision {torchvision.__version__} has {count:,} parameters, ours "
            f"{sum(p.numel() for p in model.parameters()):,}; loaded {report.loaded} tensors (head "
            f"{report.head_loaded}); max |output difference| {difference:.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    cache = commands.add_parser("cache")
    cache.add_argument("--data-root", required=True)
    cache.add_argument("--resolution", type=int, default=64)
    step = commands.add_parser("step")
    step.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    step.add_argument("--batch", type=int, default=128)
    step.add_argument("--steps", type=int, default=5)
    step.add_argument("--device", default="cpu")
    step.add_argument("--bf16", action="store_true")
    step.add_argument("--channels-last", action="store_true")
    step.add_argument("--resolution", type=int, default=None, help="image side (default: the preset's)")
    commands.add_parser("torchvision")
    args = parser.parse_args()
    if args.command == "cache":
        time_cache(args.data_root, args.resolution)
    elif args.command == "step":
        time_step(args.preset, args.batch, args.steps, args.device, args.bf16, args.channels_last, args.resolution)
    else:
        compare_with_torchvision()


if __name__ == "__main__":
    main()
