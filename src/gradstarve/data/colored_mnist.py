"""Colored MNIST (Arjovsky et al., 2019) as used by the paper's Table 1 and Fig. 4 (Sec. 4, App. A.2).

Construction, following the IRM reference code that the paper's released code copies; every probability is a
parameter of :class:`ColoredMNISTConfig`, whose defaults are the paper's:

1. The first ``n_train = 50,000`` MNIST *training* images are shuffled (seeded) and dealt into the training
   environments by position: environment ``e`` gets positions ``e, e + k, e + 2k, ...`` of the shuffled order
   (``k = len(env_flip_probs) = 2``: even / odd positions, 25,000 each). The test environment is the next ``n_test``
   training images in file order (default: all of 50,000..59,999). The official MNIST test set is not used.
2. Images are subsampled to ``image_size x image_size`` by striding, ``[::s, ::s]`` with ``s = 28 // image_size``
   (14 x 14: every other row and column, as the reference).
3. Binary label ``clean = 1 if digit < 5 else 0``; the observed label ``y`` is ``clean`` flipped with probability
   ``label_noise`` (0.25), so the digit shape predicts ``y`` with 75 % accuracy at best.
   Sign convention: this is the reference code's; the paper's text says ``y = -1`` for digits 0-4 and ``+1`` for
   5-9, the opposite. Nothing depends on it: label noise is symmetric and the colour is defined from ``y``, so
   swapping the two classes maps the data set onto itself. In the paper's ``±1`` notation (Eq. 25) our label is
   ``2 y - 1`` (:meth:`LabelledData.signed_labels`).
4. Colour ``color = y`` flipped with the environment's probability (0.2 and 0.1 for the training environments, 0.9
   for the test one): in training the colour agrees with ``y`` 85 % of the time, in test only 10 %.
5. Two colour channels: the image is stacked twice and channel ``1 - color`` is zeroed, i.e. the digit sits in channel
   ``color``; pixels are ``uint8 / 255`` as float32. ``x`` is ``(n, 2, image_size, image_size)``; the paper's MLP
   flattens it to 2 x 14 x 14 = 392 inputs.

Random streams: one integer ``seed`` controls everything, through independent ``torch.Generator`` s derived from it
with :class:`numpy.random.SeedSequence` (keys: shuffle; each training environment; the test environment). Each
environment draws ``n`` uniforms for label noise and then ``n`` for colour flips, a flip being ``u < p``; so the
same seed gives identical data, and changing one probability changes only the draws it governs, monotonically
(common random numbers): e.g. ``env_flip_probs=(0.2, 0.1)`` and ``(0.3, 0.1)`` share every label. The reference
code uses the global numpy / torch generators instead, so our data sets are the same construction but not the
same draws.

Splits (:func:`build_colored_mnist`, :func:`colored_mnist`): ``"train"`` holds the training environments one after
the other, ``group`` = environment id (0, 1) with ``group_names = ("env0", "env1")``; ``"test"`` is the test
environment with ``group`` 0 and ``group_names = ("test",)`` (every split's group ids count its own environments, so
an algorithm that loops over ``range(n_groups)`` of the training split sees exactly the training environments).
With ``val_fraction > 0`` the last ``round(val_fraction * n_e)`` examples of each training environment (random
ones: the order is shuffled) move to a ``"val"`` split with the same group ids and names, for model selection on
held-out training environments; the paper uses none (``val_fraction = 0``, no ``"val"`` key).

Oracle of Table 1 ("ERM on grayscale images"): ``gray=True`` renders every split with both channels equal to
``image / 2``: same shape (n, 2, 14, 14), so the same 392-input MLP applies, and the channel sum is exactly the
image. The reference's "grayscale model" instead feeds the channel sum of the *coloured* data to an MLP with 196
inputs; :func:`merge_channels` gives that input, ``(n, 1, 14, 14)`` = ``image``, identical for coloured and gray
data. Both remove the colour shortcut; they differ only in the first layer's width (and so its initialisation).

Fig. 4 (:func:`build_fig4_variants`, :func:`fig4_variants`): four renderings of the *same* test environment draw
(same images, labels and colours), keyed ``"gray-digit"`` (both channels ``image / 2``), ``"color-digit"`` (the
test split itself), ``"gray-blank"`` and ``"color-blank"``: every pixel replaced by the constant global mean pixel of
the (subsampled) test images, then coloured as usual or halved into both channels. The reference code redraws label
noise and colours for each variant; sharing one draw makes the four accuracies a paired comparison and changes no
expectation. (The Fig. 4 caption says 50k test examples; the released code uses the 10,000 test-environment images.)

Cost: rendering is one pass over the images, O(n * image_size^2); the full 60,000-image build takes well under a
second after :func:`~gradstarve.data.mnist.load_mnist` and holds 60,000 x 392 float32 = 94 MB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from gradstarve.data.base import LabelledData
from gradstarve.data.mnist import load_mnist

ENV_FLIP_PROBS = (0.2, 0.1)
TEST_FLIP_PROB = 0.9
LABEL_NOISE = 0.25
N_TRAIN = 50_000
IMAGE_SIZE = 14
FIG4_VARIANTS = ("gray-digit", "color-digit", "gray-blank", "color-blank")
LABEL_CONVENTION = (
    "y = 1 for digits 0-4, 0 for 5-9 (IRM reference code; the paper's text uses the opposite sign, equivalent by "
    "symmetry)"
)

_SHUFFLE, _TRAIN_ENV, _TEST_ENV = 0, 1, 2  # SeedSequence keys of the random streams


@dataclass(frozen=True)
class ColoredMNISTConfig:
    """Every parameter of the construction (see the module docstring); the defaults are the paper's.

    Attributes:
        env_flip_probs: colour-flip probability of each training environment; its length is the number of
            environments.
        test_flip_prob: colour-flip probability of the test environment.
        label_noise: probability that the binary label is flipped (all environments).
        n_train: number of MNIST training images (from the start of the file) shuffled into the training
            environments.
        n_test: number of images after those forming the test environment; ``None``: all the remaining ones.
        image_size: side of the subsampled images; must divide the original side (28): 28, 14, 7, 4, 2 or 1.
        val_fraction: fraction of each training environment held out as the ``"val"`` split (0: no ``"val"``).
        gray: render every split without colour (both channels ``image / 2``): the oracle's data.
    """

    env_flip_probs: tuple[float, ...] = ENV_FLIP_PROBS
    test_flip_prob: float = TEST_FLIP_PROB
    label_noise: float = LABEL_NOISE
    n_train: int = N_TRAIN
    n_test: int | None = None
    image_size: int = IMAGE_SIZE
    val_fraction: float = 0.0
    gray: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "env_flip_probs", tuple(float(p) for p in self.env_flip_probs))
        if not self.env_flip_probs:
            raise ValueError("env_flip_probs: need at least one training environment")
        for name, value in [("env_flip_probs", p) for p in self.env_flip_probs] + [
            ("test_flip_prob", self.test_flip_prob),
            ("label_noise", self.label_noise),
        ]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: probabilities must lie in [0, 1], got {value}")
        if self.n_train < len(self.env_flip_probs):
            raise ValueError(
                f"n_train: need at least one image per training environment ({len(self.env_flip_probs)}), "
                f"got {self.n_train}"
            )
        if self.n_test is not None and self.n_test < 1:
            raise ValueError(f"n_test: must be >= 1 (or None for all remaining images), got {self.n_test}")
        if self.image_size < 1:
            raise ValueError(f"image_size: must be >= 1, got {self.image_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must lie in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class EnvironmentDraw:
    """The random part of one environment: labels and colours of ``n`` digits (all ``(n,)`` int64).

    Attributes:
        clean: binary label of the digit before noise (``digit < 5``).
        y: observed label (``clean`` with label noise).
        color: colour channel holding the digit (``y`` with colour flips).
    """

    clean: torch.Tensor
    y: torch.Tensor
    color: torch.Tensor

    def rates(self) -> dict[str, float | int]:
        """Realised statistics: count, label-noise rate ``P(y != clean)``, colour-flip rate ``P(color != y)``,
        ``P(y = 1)``."""
        n = len(self.y)
        if n == 0:
            return {"n": 0}
        return {
            "n": n,
            "label_noise_rate": float((self.y != self.clean).double().mean()),
            "color_flip_rate": float((self.color != self.y).double().mean()),
            "positive_rate": float(self.y.double().mean()),
        }

    def subset(self, index: slice) -> EnvironmentDraw:
        return EnvironmentDraw(self.clean[index], self.y[index], self.color[index])


def digit_labels(digits: torch.Tensor) -> torch.Tensor:
    """``int64 (n,)``: 1 for digits 0-4, 0 for 5-9 (the reference code's sign; see the module docstring)."""
    return (digits < 5).long()


def draw_environment(
    digits: torch.Tensor, color_flip_prob: float, *, label_noise: float = LABEL_NOISE, generator: torch.Generator
) -> EnvironmentDraw:
    """Noisy binary labels and colours for ``digits`` (``(n,)`` integers 0-9).

    Draws ``n`` uniforms ``u`` for the labels, then ``n`` uniforms ``v`` for the colours, from ``generator``:
    ``y = clean xor (u < label_noise)`` and ``color = y xor (v < color_flip_prob)``.
    """
    for name, value in (("color_flip_prob", color_flip_prob), ("label_noise", label_noise)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: a probability in [0, 1] expected, got {value}")
    if digits.ndim != 1:
        raise ValueError(f"digits: expected shape (n,), got {tuple(digits.shape)}")
    clean = digit_labels(digits)
    uniforms = torch.rand(2, len(digits), generator=generator, dtype=torch.float64)
    y = clean ^ (uniforms[0] < label_noise).long()
    color = y ^ (uniforms[1] < color_flip_prob).long()
    return EnvironmentDraw(clean, y, color)


def downsample(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(n, H, W) -> (n, image_size, image_size)`` by keeping every ``H // image_size``-th row and column from the
    first (``[::2, ::2]`` for 28 -> 14, as the reference); ``image_size`` must divide ``H`` and ``W``."""
    height, width = images.shape[-2:]
    if height % image_size or width % image_size:
        raise ValueError(f"image_size: {image_size} must divide the image sides, got images of {height} x {width}")
    return images[:, :: height // image_size, :: width // image_size]


def blank_pixel(images: torch.Tensor, image_size: int = IMAGE_SIZE) -> float:
    """The global mean pixel, in ``[0, 1]``, of ``images`` (uint8) after :func:`downsample`: Fig. 4's blank value."""
    if len(images) == 0:
        raise ValueError("images: the mean pixel of an empty set of images is undefined")
    return float(downsample(images, image_size).double().mean()) / 255.0


def render(
    images: torch.Tensor,
    color: torch.Tensor,
    *,
    image_size: int = IMAGE_SIZE,
    gray: bool = False,
    blank: float | None = None,
) -> torch.Tensor:
    """Two-channel float32 inputs ``(n, 2, image_size, image_size)`` from uint8 images ``(n, H, W)``.

    Args:
        images: pixel intensities 0-255.
        color: ``(n,)`` channel (0 or 1) that holds each digit; the other channel is zero. Ignored when ``gray``.
        image_size: see :func:`downsample`.
        gray: both channels ``image / 2`` (no colour; the channel sum is the image).
        blank: replace every pixel by this constant in ``[0, 1]`` (Fig. 4's blank images), before colouring.
    """
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"images: expected uint8 (n, H, W), got {images.dtype} {tuple(images.shape)}")
    n = len(images)
    if color.shape != (n,):
        raise ValueError(f"color: expected shape ({n},), got {tuple(color.shape)}")
    if blank is not None and not 0.0 <= blank <= 1.0:
        raise ValueError(f"blank: a pixel value in [0, 1] expected, got {blank}")
    if blank is None:
        pixels = downsample(images, image_size).to(torch.float32) / 255.0
    else:
        pixels = torch.full((n, image_size, image_size), blank, dtype=torch.float32)
        downsample(images, image_size)  # validates image_size against the image sides
    if gray:
        half = pixels * 0.5  # exact halving: the two channels sum to the image
        return torch.stack([half, half], dim=1)
    if len(color) and (int(color.min()) < 0 or int(color.max()) > 1):
        raise ValueError("color: channel indices must be 0 or 1")
    x = torch.zeros(n, 2, image_size, image_size, dtype=torch.float32)
    x[torch.arange(n), color] = pixels
    return x


def merge_channels(data: LabelledData) -> LabelledData:
    """The reference "grayscale model"'s input: ``x`` summed over channels, ``(n, 1, s, s)`` (= ``image / 255``)."""
    return LabelledData(
        data.x.sum(dim=1, keepdim=True),
        data.y,
        data.group,
        data.group_names,
        f"{data.name}/merged",
        {**data.metadata, "channels": "summed over the two colour channels: (n, 1, s, s) = image / 255"},
    )


def _generator(seed: int, *key: int) -> torch.Generator:
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def _check_mnist_arrays(images: torch.Tensor, digits: torch.Tensor, config: ColoredMNISTConfig) -> tuple[int, int]:
    """Validate the inputs; return ``(n_train, n_test)``."""
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"images: expected uint8 (n, H, W), got {images.dtype} {tuple(images.shape)}")
    if digits.shape != (len(images),) or digits.dtype.is_floating_point or digits.dtype == torch.bool:
        raise ValueError(
            f"digits: expected integers of shape ({len(images)},), got {digits.dtype} {tuple(digits.shape)}"
        )
    if len(digits) and (int(digits.min()) < 0 or int(digits.max()) > 9):
        raise ValueError(f"digits: must be 0-9, found {int(digits.min())}..{int(digits.max())}")
    downsample(images[:0], config.image_size)
    n_test = len(images) - config.n_train if config.n_test is None else config.n_test
    if n_test < 1 or config.n_train + n_test > len(images):
        raise ValueError(
            f"n_train + n_test: {config.n_train} + {n_test} images requested but only {len(images)} given "
            "(the test environment needs at least one image after the training images)"
        )
    return config.n_train, n_test


@dataclass(frozen=True)
class _Environment:
    images: torch.Tensor
    draw: EnvironmentDraw
    flip_prob: float
    source: str


def _environments(
    images: torch.Tensor, digits: torch.Tensor, seed: int, config: ColoredMNISTConfig
) -> tuple[list[_Environment], _Environment]:
    """The training environments and the test environment, before rendering."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    n_train, n_test = _check_mnist_arrays(images, digits, config)
    order = torch.randperm(n_train, generator=_generator(seed, _SHUFFLE))
    pool_images, pool_digits = images[:n_train][order], digits[:n_train][order]
    k = len(config.env_flip_probs)
    train = []
    for e, p in enumerate(config.env_flip_probs):
        draw = draw_environment(
            pool_digits[e::k], p, label_noise=config.label_noise, generator=_generator(seed, _TRAIN_ENV, e)
        )
        source = f"MNIST train images [0, {n_train}) shuffled, positions {e}::{k}"
        train.append(_Environment(pool_images[e::k], draw, p, source))
    test_images = images[n_train : n_train + n_test]
    test_draw = draw_environment(
        digits[n_train : n_train + n_test],
        config.test_flip_prob,
        label_noise=config.label_noise,
        generator=_generator(seed, _TEST_ENV),
    )
    test = _Environment(
        test_images, test_draw, config.test_flip_prob, f"MNIST train images [{n_train}, {n_train + n_test})"
    )
    return train, test


def _labelled(
    parts: Sequence[tuple[torch.Tensor, EnvironmentDraw, _Environment]],
    group_names: tuple[str, ...],
    name: str,
    metadata: dict,
) -> LabelledData:
    x = torch.cat([part[0] for part in parts])
    y = torch.cat([part[1].y for part in parts])
    group = torch.cat([torch.full((len(part[1].y),), g, dtype=torch.int64) for g, part in enumerate(parts)])
    environments = {
        group_name: {"color_flip_prob": env.flip_prob, "source": env.source, **draw.rates()}
        for group_name, (_, draw, env) in zip(group_names, parts, strict=True)
    }
    return LabelledData(x, y, group, group_names, name, {**metadata, "environments": environments})


def build_colored_mnist(
    images: torch.Tensor, digits: torch.Tensor, seed: int = 0, config: ColoredMNISTConfig | None = None
) -> dict[str, LabelledData]:
    """Colored MNIST from given MNIST training images and digits (pure: no files; tests pass generated digits).

    Args:
        images: ``uint8 (N, H, W)`` MNIST training images in file order (the real ones: ``N = 60,000``, 28 x 28).
        digits: ``(N,)`` integer digits 0-9.
        seed: the one seed of every random stream (see the module docstring).
        config: the construction's parameters (default: the paper's).

    Returns:
        ``{"train", "test"}`` (and ``"val"`` when ``config.val_fraction > 0``) :class:`LabelledData` splits: ``x``
        float32 ``(n, 2, s, s)`` in ``[0, 1]``, ``y`` int64 in ``{0, 1}``, ``group`` the environment id; metadata
        holds the configuration, the seed and each environment's realised label-noise and colour-flip rates.
    """
    config = config or ColoredMNISTConfig()
    train_envs, test_env = _environments(images, digits, seed, config)
    base = {
        "dataset": "colored-mnist",
        "seed": int(seed),
        "config": asdict(config),
        "label_convention": LABEL_CONVENTION,
        "x_layout": "(n, 2, s, s) float32 in [0, 1]: the digit in channel `color`, the other channel zero"
        if not config.gray
        else "(n, 2, s, s) float32 in [0, 1]: gray, both channels image / 2",
    }

    def rendered(env: _Environment, index: slice = slice(None)) -> tuple[torch.Tensor, EnvironmentDraw, _Environment]:
        draw = env.draw.subset(index)
        x = render(env.images[index], draw.color, image_size=config.image_size, gray=config.gray)
        return x, draw, env

    env_names = tuple(f"env{e}" for e in range(len(train_envs)))
    splits: dict[str, LabelledData] = {}
    train_parts, val_parts = [], []
    for env in train_envs:
        n_env = len(env.images)
        n_val = round(config.val_fraction * n_env)
        if config.val_fraction > 0 and not 0 < n_val < n_env:
            raise ValueError(
                f"val_fraction: {config.val_fraction} of an environment of {n_env} examples leaves "
                f"{n_val} for validation and {n_env - n_val} for training; both must be >= 1"
            )
        train_parts.append(rendered(env, slice(0, n_env - n_val)))
        if n_val:
            val_parts.append(rendered(env, slice(n_env - n_val, n_env)))
    splits["train"] = _labelled(train_parts, env_names, "colored-mnist/train", {**base, "split": "train"})
    if val_parts:
        splits["val"] = _labelled(val_parts, env_names, "colored-mnist/val", {**base, "split": "val"})
    splits["test"] = _labelled([rendered(test_env)], ("test",), "colored-mnist/test", {**base, "split": "test"})
    return splits


def build_fig4_variants(
    images: torch.Tensor, digits: torch.Tensor, seed: int = 0, config: ColoredMNISTConfig | None = None
) -> dict[str, LabelledData]:
    """Fig. 4's four renderings of the test environment of :func:`build_colored_mnist` (same seed and config).

    Returns:
        :class:`LabelledData` keyed by :data:`FIG4_VARIANTS`: ``"gray-digit"``, ``"color-digit"`` (equal to the
        ``"test"`` split, with ``config.gray`` ignored), ``"gray-blank"``, ``"color-blank"``; all share one draw of
        labels and colours. Only the test-environment parameters of ``config`` matter (``test_flip_prob``,
        ``label_noise``, ``n_train``, ``n_test``, ``image_size``). The metadata's ``blank_pixel`` is the constant of
        the blank variants, in ``[0, 1]``.
    """
    config = config or ColoredMNISTConfig()
    _, env = _environments(images, digits, seed, config)
    blank = blank_pixel(env.images, config.image_size)
    base = {
        "dataset": "colored-mnist",
        "seed": int(seed),
        "config": asdict(config),
        "label_convention": LABEL_CONVENTION,
        "blank_pixel": blank,
        "environments": {"test": {"color_flip_prob": env.flip_prob, "source": env.source, **env.draw.rates()}},
    }
    settings = {
        "gray-digit": {"gray": True, "blank": None},
        "color-digit": {"gray": False, "blank": None},
        "gray-blank": {"gray": True, "blank": blank},
        "color-blank": {"gray": False, "blank": blank},
    }
    variants = {}
    for name in FIG4_VARIANTS:
        x = render(env.images, env.draw.color, image_size=config.image_size, **settings[name])
        variants[name] = LabelledData(
            x,
            env.draw.y,
            torch.zeros(len(x), dtype=torch.int64),
            (name,),
            f"colored-mnist/fig4/{name}",
            {**base, "split": f"fig4/{name}", "variant": name},
        )
    return variants


def colored_mnist(
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    env_flip_probs: Sequence[float] = ENV_FLIP_PROBS,
    test_flip_prob: float = TEST_FLIP_PROB,
    label_noise: float = LABEL_NOISE,
    n_train: int = N_TRAIN,
    n_test: int | None = None,
    image_size: int = IMAGE_SIZE,
    val_fraction: float = 0.0,
    gray: bool = False,
    verify: bool = True,
) -> dict[str, LabelledData]:
    """Colored MNIST from the MNIST files under ``data_root`` (see :func:`~gradstarve.data.mnist.load_mnist`).

    The keyword arguments are :class:`ColoredMNISTConfig`'s (defaults: the paper's); returns
    :func:`build_colored_mnist`'s splits. Raises :class:`~gradstarve.data.errors.MissingDataError` (with the download
    command) when the files are absent: nothing is downloaded implicitly.
    """
    config = ColoredMNISTConfig(
        tuple(env_flip_probs), test_flip_prob, label_noise, n_train, n_test, image_size, val_fraction, gray
    )
    images, digits = load_mnist(data_root, "train", verify=verify)
    return build_colored_mnist(images, digits, seed, config)


def fig4_variants(
    data_root: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    test_flip_prob: float = TEST_FLIP_PROB,
    label_noise: float = LABEL_NOISE,
    n_train: int = N_TRAIN,
    n_test: int | None = None,
    image_size: int = IMAGE_SIZE,
    verify: bool = True,
) -> dict[str, LabelledData]:
    """Fig. 4's four test variants from the MNIST files under ``data_root``; see :func:`build_fig4_variants`.

    With the same ``seed`` and parameters, ``"color-digit"`` equals :func:`colored_mnist`'s ``"test"`` split.
    """
    config = ColoredMNISTConfig(
        test_flip_prob=test_flip_prob, label_noise=label_noise, n_train=n_train, n_test=n_test, image_size=image_size
    )
    images, digits = load_mnist(data_root, "train", verify=verify)
    return build_fig4_variants(images, digits, seed, config)
