"""Colored MNIST on generated digits: construction statistics within binomial tolerance, channel layout, provenance
of every example, Fig. 4 variants, the oracle's gray data, determinism per seed. Tolerances are 4 binomial standard
deviations ``4 sqrt(p (1 - p) / n)`` (a false alarm about once in 16,000 checks)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gradstarve.data.base import LabelledData
from gradstarve.data.colored_mnist import (
    FIG4_VARIANTS,
    ColoredMNISTConfig,
    blank_pixel,
    build_colored_mnist,
    build_fig4_variants,
    colored_mnist,
    digit_labels,
    downsample,
    draw_environment,
    fig4_variants,
    merge_channels,
    render,
)
from gradstarve.data.errors import MissingDataError
from idx_files import write_mnist

N_IMAGES, N_TRAIN = 24_000, 16_000  # 8,000 examples per training environment, 8,000 in test


def _within_binomial(rate: float, p: float, n: int) -> bool:
    return abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12


def _tagged_mnist(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images whose pixels (0, 0) and (0, 2) encode their index (both survive [::2, ::2]) and whose pixel
    (2, 0) is 255, so that every example of the built data set tells where it came from and which channel it is
    in; random digits."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=generator, dtype=torch.uint8)
    index = torch.arange(n)
    images[:, 0, 0], images[:, 0, 2], images[:, 2, 0] = index // 256, index % 256, 255
    return images, torch.randint(0, 10, (n,), generator=generator)


@pytest.fixture(scope="module")
def mnist_like():
    return _tagged_mnist(N_IMAGES)


@pytest.fixture(scope="module")
def built(mnist_like):
    return build_colored_mnist(*mnist_like, seed=3, config=ColoredMNISTConfig(n_train=N_TRAIN))


def _source_index(data: LabelledData) -> torch.Tensor:
    pixels = torch.round(data.x.sum(dim=1) * 255).long()  # the channel sum is the image, coloured or gray
    return pixels[:, 0, 0] * 256 + pixels[:, 0, 1]


def _color(data: LabelledData) -> torch.Tensor:
    return (data.x[:, 1, 1, 0] > 0).long()  # pixel (2, 0) -> (1, 0) after subsampling, nonzero in its channel


# --- the low-level pieces -----------------------------------------------------------------------------------------


def test_digit_labels_follow_the_reference_sign():
    assert digit_labels(torch.arange(10)).tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(("flip", "noise"), [(0.2, 0.25), (0.9, 0.05), (0.0, 0.0), (1.0, 0.5)])
def test_draw_environment_flip_rates_within_binomial_tolerance(flip, noise):
    n = 200_000
    digits = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(0))
    draw = draw_environment(digits, flip, label_noise=noise, generator=torch.Generator().manual_seed(1))
    assert torch.equal(draw.clean, digit_labels(digits))
    assert _within_binomial(float((draw.y != draw.clean).double().mean()), noise, n)
    assert _within_binomial(float((draw.color != draw.y).double().mean()), flip, n)
    # label noise and colour flips are independent: P(color != clean) = noise (1 - flip) + flip (1 - noise)
    assert _within_binomial(float((draw.color != draw.clean).double().mean()), noise + flip - 2 * noise * flip, n)
    assert draw.rates()["n"] == n and draw.y.dtype == draw.color.dtype == torch.int64


def test_render_channel_layout_colour_gray_and_blank():
    images = torch.randint(0, 256, (50, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    color = torch.arange(50) % 2
    small = images[:, ::2, ::2].float() / 255
    x = render(images, color)
    assert x.shape == (50, 2, 14, 14) and x.dtype == torch.float32
    rows = torch.arange(50)
    torch.testing.assert_close(x[rows, color], small, rtol=0, atol=0)
    assert not x[rows, 1 - color].any()
    gray = render(images, color, gray=True)
    torch.testing.assert_close(gray[:, 0], small / 2, rtol=0, atol=0)
    torch.testing.assert_close(gray[:, 0] + gray[:, 1], small, rtol=0, atol=0)
    blank = render(images, color, blank=0.25)
    assert torch.all(blank[torch.arange(50), color] == 0.25) and not blank[torch.arange(50), 1 - color].any()
    assert torch.all(render(images, color, gray=True, blank=0.25) == 0.125)
    assert render(images, color, image_size=7).shape == (50, 2, 7, 7)
    torch.testing.assert_close(render(images, color, image_size=28).sum(1), images.float() / 255, rtol=0, atol=0)


def test_bad_arguments_raise_value_errors_naming_them(mnist_like):
    images, digits = mnist_like
    with pytest.raises(ValueError, match="image_size: 5 must divide"):
        downsample(images, 5)
    with pytest.raises(ValueError, match="env_flip_probs: probabilities must lie in"):
        ColoredMNISTConfig(env_flip_probs=(0.2, 1.5))
    with pytest.raises(ValueError, match="label_noise"):
        ColoredMNISTConfig(label_noise=-0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        ColoredMNISTConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="n_train \\+ n_test: 24000 \\+ 0"):
        build_colored_mnist(images, digits, config=ColoredMNISTConfig(n_train=24_000))
    with pytest.raises(ValueError, match="digits: must be 0-9"):
        build_colored_mnist(images[:100], digits[:100] + 5, config=ColoredMNISTConfig(n_train=50))
    with pytest.raises(ValueError, match="images: expected uint8"):
        build_colored_mnist(images.float(), digits)
    with pytest.raises(ValueError, match="seed"):
        build_colored_mnist(images, digits, seed=-1, config=ColoredMNISTConfig(n_train=N_TRAIN))


# --- the full construction ----------------------------------------------------------------------------------------


def test_splits_shapes_groups_and_names(built):
    assert set(built) == {"train", "test"}
    train, test = built["train"], built["test"]
    assert train.x.shape == (N_TRAIN, 2, 14, 14) and test.x.shape == (N_IMAGES - N_TRAIN, 2, 14, 14)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert float(train.x.min()) >= 0 and float(train.x.max()) <= 1
    assert train.group_names == ("env0", "env1") and train.group_counts().tolist() == [N_TRAIN // 2] * 2
    assert test.group_names == ("test",) and test.group_counts().tolist() == [N_IMAGES - N_TRAIN]
    assert set(train.y.unique().tolist()) == {0, 1}
    assert train.name == "colored-mnist/train" and test.name == "colored-mnist/test"
    json.dumps(train.metadata), json.dumps(test.metadata)  # run folders store it as JSON


def test_every_example_comes_from_the_right_images(built, mnist_like):
    train, test = built["train"], built["test"]
    source = _source_index(train)
    env0, env1 = source[train.group == 0], source[train.group == 1]
    assert sorted(source.tolist()) == list(range(N_TRAIN))  # each training image exactly once
    assert not torch.equal(env0, torch.arange(0, N_TRAIN, 2))  # shuffled before dealing the environments
    assert torch.equal(_source_index(test), torch.arange(N_TRAIN, N_IMAGES))  # the next images, in file order
    images, _ = mnist_like
    torch.testing.assert_close(train.x.sum(1), images[source][:, ::2, ::2].float() / 255, rtol=0, atol=0)
    assert len(env0) == len(env1)


def test_realised_label_noise_and_colour_flips_within_binomial_tolerance(built, mnist_like):
    _, digits = mnist_like
    for data, probs in ((built["train"], (0.2, 0.1)), (built["test"], (0.9,))):
        clean = digit_labels(digits[_source_index(data)])
        color = _color(data)
        for g, (name, p) in enumerate(zip(data.group_names, probs, strict=True)):
            mask = data.group == g
            n = int(mask.sum())
            label_noise = float((data.y[mask] != clean[mask]).double().mean())
            color_flip = float((color[mask] != data.y[mask]).double().mean())
            assert _within_binomial(label_noise, 0.25, n), (name, label_noise)
            assert _within_binomial(color_flip, p, n), (name, color_flip)
            stats = data.metadata["environments"][name]
            assert stats["n"] == n and stats["color_flip_prob"] == p
            assert stats["label_noise_rate"] == pytest.approx(label_noise, abs=1e-12)
            assert stats["color_flip_rate"] == pytest.approx(color_flip, abs=1e-12)


def test_colour_is_the_training_shortcut_and_reversed_in_test(built):
    # P(color == y) = 1 - p: 0.85 over both training environments, 0.1 in test
    train, test = built["train"], built["test"]
    assert _within_binomial(float((_color(train) == train.y).double().mean()), 0.85, len(train))
    assert _within_binomial(float((_color(test) == test.y).double().mean()), 0.1, len(test))


def test_same_seed_same_data_other_seed_other_data(mnist_like):
    config = ColoredMNISTConfig(n_train=2_000, n_test=500)
    first = build_colored_mnist(*mnist_like, seed=11, config=config)
    again = build_colored_mnist(*mnist_like, seed=11, config=config)
    other = build_colored_mnist(*mnist_like, seed=12, config=config)
    for key in ("train", "test"):
        assert torch.equal(first[key].x, again[key].x) and torch.equal(first[key].y, again[key].y)
        assert torch.equal(first[key].group, again[key].group)
        assert not torch.equal(first[key].y, other[key].y)
    assert not torch.equal(first["train"].x, other["train"].x)


def test_changing_a_colour_probability_keeps_every_label(mnist_like):
    base = build_colored_mnist(*mnist_like, seed=5, config=ColoredMNISTConfig(n_train=4_000, n_test=1_000))
    more = ColoredMNISTConfig(env_flip_probs=(0.3, 0.1), test_flip_prob=0.8, n_train=4_000, n_test=1_000)
    changed = build_colored_mnist(*mnist_like, seed=5, config=more)
    for key in ("train", "test"):
        assert torch.equal(base[key].y, changed[key].y)  # common random numbers: labels do not move
    env1 = base["train"].group == 1
    assert torch.equal(base["train"].x[env1], changed["train"].x[env1])  # nor does the unchanged environment
    flipped_before = _color(base["train"]) != base["train"].y
    flipped_after = _color(changed["train"]) != changed["train"].y
    assert torch.all(flipped_after[flipped_before])  # a larger probability only adds flips


def test_more_environments_and_other_image_sizes(mnist_like):
    config = ColoredMNISTConfig(env_flip_probs=(0.3, 0.2, 0.1), n_train=3_000, n_test=300, image_size=7)
    splits = build_colored_mnist(*mnist_like, seed=0, config=config)
    assert splits["train"].group_names == ("env0", "env1", "env2")
    assert splits["train"].group_counts().tolist() == [1_000] * 3
    assert splits["train"].x.shape == (3_000, 2, 7, 7) and splits["test"].x.shape == (300, 2, 7, 7)


def test_val_fraction_holds_out_part_of_each_training_environment(mnist_like):
    config = ColoredMNISTConfig(n_train=4_000, n_test=1_000, val_fraction=0.1)
    splits = build_colored_mnist(*mnist_like, seed=2, config=config)
    full = build_colored_mnist(*mnist_like, seed=2, config=ColoredMNISTConfig(n_train=4_000, n_test=1_000))
    train, val = splits["train"], splits["val"]
    assert train.group_counts().tolist() == [1_800, 1_800] and val.group_counts().tolist() == [200, 200]
    assert val.group_names == train.group_names and val.name == "colored-mnist/val"
    sources = torch.cat([_source_index(train), _source_index(val)])
    assert sorted(sources.tolist()) == list(range(4_000))  # disjoint, together the whole training pool
    for g in (0, 1):  # the same draw as without validation, split at the end of each environment
        whole = full["train"].y[full["train"].group == g]
        torch.testing.assert_close(torch.cat([train.y[train.group == g], val.y[val.group == g]]), whole)
    assert torch.equal(splits["test"].x, full["test"].x)
    with pytest.raises(ValueError, match="val_fraction"):
        build_colored_mnist(*mnist_like, config=ColoredMNISTConfig(n_train=4, n_test=10, val_fraction=0.1))


def test_gray_data_for_the_oracle_has_no_colour_but_the_same_labels(mnist_like, built):
    config = ColoredMNISTConfig(n_train=N_TRAIN, gray=True)
    gray = build_colored_mnist(*mnist_like, seed=3, config=config)
    for key in ("train", "test"):
        assert torch.equal(gray[key].y, built[key].y) and torch.equal(gray[key].group, built[key].group)
        torch.testing.assert_close(gray[key].x[:, 0], gray[key].x[:, 1], rtol=0, atol=0)
        torch.testing.assert_close(gray[key].x.sum(1), built[key].x.sum(1), rtol=0, atol=0)
        merged = merge_channels(built[key])
        assert merged.x.shape == (len(built[key]), 1, 14, 14)
        torch.testing.assert_close(merged.x, merge_channels(gray[key]).x, rtol=0, atol=0)
    assert "gray" in gray["train"].metadata["x_layout"]


def test_fig4_variants(mnist_like, built):
    variants = build_fig4_variants(*mnist_like, seed=3, config=ColoredMNISTConfig(n_train=N_TRAIN))
    assert tuple(variants) == FIG4_VARIANTS
    test = built["test"]
    images, _ = mnist_like
    mean = images[N_TRAIN:, ::2, ::2].numpy().astype(np.float64).mean() / 255
    assert variants["gray-blank"].metadata["blank_pixel"] == pytest.approx(mean, rel=1e-12)
    assert blank_pixel(images[N_TRAIN:]) == pytest.approx(mean, rel=1e-12)
    for name, data in variants.items():
        assert torch.equal(data.y, test.y) and data.group_names == (name,) and data.x.shape == test.x.shape
    assert torch.equal(variants["color-digit"].x, test.x)
    gray_digit = variants["gray-digit"].x
    torch.testing.assert_close(gray_digit[:, 0], gray_digit[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(gray_digit.sum(1), test.x.sum(1), rtol=0, atol=0)
    color = _color(test)
    color_blank = variants["color-blank"].x
    rows = torch.arange(len(test))
    torch.testing.assert_close(color_blank[rows, color], torch.full((len(test), 14, 14), mean), rtol=1e-6, atol=0)
    assert not color_blank[rows, 1 - color].any()
    torch.testing.assert_close(variants["gray-blank"].x, torch.full_like(test.x, mean / 2), rtol=1e-6, atol=0)
    # the blank colour variant keeps only the (reversed) colour: predicting y from it is right 10 % of the time
    assert _within_binomial(float((color == test.y).double().mean()), 0.1, len(test))


# --- from files ---------------------------------------------------------------------------------------------------


def test_colored_mnist_and_fig4_from_a_data_root(tmp_path):
    arrays = write_mnist(tmp_path / "mnist", "gz", n_train=300, n_test=10)
    kwargs = {"n_train": 200, "verify": False}
    splits = colored_mnist(tmp_path, seed=4, env_flip_probs=(0.3, 0.1), val_fraction=0.2, **kwargs)
    images, digits = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"]).long()
    config = ColoredMNISTConfig(env_flip_probs=(0.3, 0.1), n_train=200, val_fraction=0.2)
    direct = build_colored_mnist(images, digits, 4, config)
    assert set(splits) == {"train", "val", "test"} and len(splits["test"]) == 100
    for key in splits:
        assert torch.equal(splits[key].x, direct[key].x) and torch.equal(splits[key].y, direct[key].y)
    variants = fig4_variants(tmp_path, seed=4, **kwargs)
    assert torch.equal(variants["color-digit"].x, splits["test"].x)
    assert json.loads(json.dumps(splits["train"].metadata))["config"]["env_flip_probs"] == [0.3, 0.1]
    with pytest.raises(MissingDataError, match="gradstarve data download mnist --data-root"):
        colored_mnist(tmp_path / "nowhere")
