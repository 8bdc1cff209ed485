"""Own ResNet-18/50: torchvision's parameter counts and state-dict layout, shapes, presets, seeding, weight loading."""

from __future__ import annotations

import pytest
import torch

from gradstarve.models.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    PretrainedWeightsError,
    build_resnet,
    load_pretrained,
    resnet18,
    resnet50,
)


def _torchvision_keys(blocks: tuple[int, ...], bottleneck: bool) -> set[str]:
    """State-dict keys of torchvision's ``resnet18`` / ``resnet50``, written out from its layout rules."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias", *(f"bn1.{name}" for name in bn)}
    convs = 3 if bottleneck else 2
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            for i in range(1, convs + 1):
                keys.add(f"{prefix}.conv{i}.weight")
                keys.update(f"{prefix}.bn{i}.{name}" for name in bn)
            if block == 0 and (stage > 1 or bottleneck):
                keys.add(f"{prefix}.downsample.0.weight")
                keys.update(f"{prefix}.downsample.1.{name}" for name in bn)
    return keys


def _n_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _basic_resnet18_parameters(base: int, out_features: int) -> int:
    """Parameters of a ResNet-18 with ``base`` stem channels, counted layer by layer (a BN has 2 per channel)."""
    total = 3 * base * 7 * 7 + 2 * base  # stem convolution and batch norm
    in_planes = base
    for stage in range(4):
        planes = base * 2**stage
        total += in_planes * planes * 9 + planes * planes * 9 + 2 * 2 * planes  # first block
        if in_planes != planes:
            total += in_planes * planes + 2 * planes  # 1 x 1 downsample and its batch norm
        total += 2 * planes * planes * 9 + 2 * 2 * planes  # second block
        in_planes = planes
    return total + in_planes * out_features + out_features


def test_parameter_counts_equal_torchvision_with_a_1000_way_head():
    assert _basic_resnet18_parameters(64, 1000) == 11_689_512
    assert _n_parameters(resnet18()) == 11_689_512
    assert _n_parameters(resnet50()) == 25_557_032
    # A binary head removes 999 output rows: 512 * 999 + 999 (ResNet-18), 2048 * 999 + 999 (ResNet-50).
    assert _n_parameters(resnet18(out_features=1)) == 11_689_512 - 513 * 999
    assert _n_parameters(resnet50(out_features=1)) == 25_557_032 - 2049 * 999


def test_state_dict_layout_matches_torchvision():
    r18, r50 = resnet18().state_dict(), resnet50().state_dict()
    assert set(r18) == _torchvision_keys((2, 2, 2, 2), bottleneck=False) and len(r18) == 122
    assert set(r50) == _torchvision_keys((3, 4, 6, 3), bottleneck=True) and len(r50) == 320
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.2.bn3.running_var": (2048,),
        "fc.weight": (1000, 2048),
    }
    for key, shape in shapes.items():
        assert tuple(r50[key].shape) == shape, key
    assert tuple(r18["layer4.1.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(r18["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    # v1.5: the stride-2 of a stage sits on the 3 x 3 convolution of its first bottleneck.
    model = resnet50()
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)


def test_forward_shapes_and_backward():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=generator)
    model = resnet18(out_features=1, generator=generator)
    out = model(x)
    assert out.shape == (2, 1) and model.features(x).shape == (2, 512)
    out.sum().backward()
    assert model.conv1.weight.grad is not None and float(model.conv1.weight.grad.abs().sum()) > 0
    assert resnet50(out_features=2, width=0.25)(torch.rand(2, 3, 32, 32)).shape == (2, 2)
    assert resnet50(width=0.25).features(torch.rand(2, 3, 32, 32)).shape == (2, 512)  # 2048 x 0.25
    small = resnet18(out_features=3, width=0.25, stem="small")
    assert small(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        model(torch.rand(2, 1, 64, 64))


def test_presets():
    assert set(PRESETS) == {"cpu", "paper"}
    cpu, paper = PRESETS["cpu"], PRESETS["paper"]
    assert (cpu.architecture, cpu.width, cpu.resolution) == ("resnet18", 0.5, 64)
    assert (paper.architecture, paper.width, paper.resolution, paper.stem) == ("resnet50", 1.0, 224, "imagenet")
    model = build_resnet("cpu", generator=torch.Generator().manual_seed(0))
    assert model(torch.rand(4, 3, cpu.resolution, cpu.resolution)).shape == (4, 1)
    assert _n_parameters(model) == _basic_resnet18_parameters(32, 1)  # half of 64 base channels, 1 logit
    assert model.normalize_input
    paper_model = build_resnet("paper", out_features=2)
    assert _n_parameters(paper_model) == 25_557_032 - 2049 * 998
    assert paper_model(torch.rand(1, 3, 224, 224)).shape == (1, 2)
    with pytest.raises(ValueError, match="unknown ResNet preset 'gpu'; valid: cpu, paper"):
        build_resnet("gpu")


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="width"):
        resnet18(width=0)
    with pytest.raises(ValueError, match="stem"):
        resnet18(stem="cifar")
    with pytest.raises(ValueError, match="out_features"):
        resnet18(out_features=0)


def test_seeded_initialisation_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    first = resnet18(out_features=1, generator=torch.Generator().manual_seed(7)).state_dict()
    second = resnet18(out_features=1, generator=torch.Generator().manual_seed(7)).state_dict()
    other = resnet18(out_features=1, generator=torch.Generator().manual_seed(8)).state_dict()
    model = resnet18(generator=torch.Generator().manual_seed(7))
    model.replace_head(2, generator=torch.Generator().manual_seed(9))
    assert model.fc.weight.shape == (2, 512) and model.out_features == 2
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    assert not torch.equal(first["fc.weight"], other["fc.weight"])
    # torchvision's scheme: Kaiming-normal fan_out (std sqrt(2 / (out * k * k))), BN = (1, 0), fc U(+-1/sqrt(512)).
    std = float(first["layer4.1.conv2.weight"].std())
    assert abs(std - (2 / (512 * 9)) ** 0.5) < 0.01 * std
    assert torch.equal(first["layer1.0.bn1.weight"], torch.ones(64))
    assert float(first["fc.weight"].abs().max()) <= 512**-0.5


def test_input_normalisation_is_inside_the_model_and_not_in_the_state_dict():
    plain = resnet18(out_features=1, generator=torch.Generator().manual_seed(0)).eval()
    normalising = resnet18(out_features=1, normalize_input=True, generator=torch.Generator().manual_seed(0)).eval()
    assert set(normalising.state_dict()) == set(plain.state_dict())
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(normalising(x), plain((x - mean) / std), atol=1e-5)


def test_load_pretrained_replaces_the_head(tmp_path):
    source = resnet18(generator=torch.Generator().manual_seed(1))
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = resnet18(out_features=1, generator=torch.Generator().manual_seed(2))
    fresh_head = model.fc.weight.detach().clone()
    report = load_pretrained(model, path)
    assert not report.head_loaded and report.loaded == 120  # 122 tensors less the 1000-way fc
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(model.fc.weight, fresh_head) and model.fc.weight.shape == (1, 512)

    same_head = resnet18(generator=torch.Generator().manual_seed(3))
    assert load_pretrained(same_head, path).head_loaded
    assert torch.equal(same_head.fc.weight, source.fc.weight)

    # DataParallel prefixes, a wrapping dict and old files without num_batches_tracked are accepted.
    wrapped = {
        "state_dict": {f"module.{key}": value for key, value in source.state_dict().items() if "num_batches" not in key}
    }
    torch.save(wrapped, tmp_path / "wrapped.pth")
    other = resnet18(out_features=2, generator=torch.Generator().manual_seed(4))
    load_pretrained(other, tmp_path / "wrapped.pth")
    assert torch.equal(other.layer3[1].bn2.running_var, source.layer3[1].bn2.running_var)


def test_load_pretrained_rejects_checkpoints_that_do_not_fit(tmp_path):
    state = resnet18().state_dict()
    missing = {key: value for key, value in state.items() if key != "layer1.0.conv1.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(PretrainedWeightsError, match=r"1 missing: layer1.0.conv1.weight"):
        load_pretrained(resnet18(out_features=1), tmp_path / "missing.pth")
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(PretrainedWeightsError, match=r"1 unexpected: extra.weight"):
        load_pretrained(resnet18(out_features=1), tmp_path / "extra.pth")
    torch.save(state, tmp_path / "resnet18.pth")
    with pytest.raises(PretrainedWeightsError, match=r"mis-shaped: conv1.weight: checkpoint \(64, 3, 7, 7\)"):
        load_pretrained(resnet18(width=0.5), tmp_path / "resnet18.pth")
    with pytest.raises(PretrainedWeightsError, match=r"missing: .*conv3.weight"):
        load_pretrained(resnet50(), tmp_path / "resnet18.pth")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_pretrained(resnet18(), tmp_path / "absent.pth")
