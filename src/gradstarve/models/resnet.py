"""ResNet-18 and ResNet-50 (He et al., 2016) in plain PyTorch, laid out like torchvision's, without torchvision.

The paper trains a ResNet-50 on CelebA at 224 x 224 (Sec. 4, Table 2, App. A.3, following Sagawa et al. 2019, who
start from ImageNet weights). This module gives:

* :class:`ResNet` with :class:`BasicBlock` (ResNet-18) and :class:`Bottleneck` (ResNet-50, "v1.5": the stride sits
  on the 3 x 3 convolution, as in torchvision). Module and parameter names are torchvision's (``conv1``, ``bn1``,
  ``layer1.0.conv1.weight``, ``layer1.0.downsample.0.weight``, ``fc.bias``, ...), so a torchvision-format
  ImageNet state dict loads with :func:`load_pretrained`. With a 1000-way head the parameter counts are exactly
  torchvision's: 11,689,512 (ResNet-18) and 25,557,032 (ResNet-50).
* a width multiplier (channels ``round(64 w), round(128 w), ...``) and a ``"small"`` stem (3 x 3 stride-1
  convolution, no max-pool, for inputs of 32-64 pixels), for training on a CPU;
* :data:`PRESETS`: ``"cpu"`` (ResNet-18 at half width with the ImageNet stem, 64 x 64 inputs: 2.8 M parameters,
  about 0.2 s per forward+backward of 128 images on 2 cores) and ``"paper"`` (ResNet-50 at 224 x 224, for a GPU),
  built by :func:`build_resnet`.
* optional input normalisation inside the model (``normalize_input=True``: subtract the ImageNet mean and divide by
  its std per channel, as non-persistent buffers that are not in the state dict), so data loaders hand over pixels
  in ``[0, 1]`` (see :mod:`gradstarve.data.celeba`).

No pretrained weights ship with gradstarve and none could be found offline: no PyPI wheel or Debian package
reachable here embeds ImageNet ResNet weights without pulling torchvision (torchvision and timm download them at
run time; Debian's python3-torchvision ships none). So training is from scratch unless the user passes a local
torchvision checkpoint (e.g. ``resnet50-0676ba61.pth`` / ``resnet50-19c8e357.pth``) to :func:`load_pretrained`;
results must say which.

Initialisation is torchvision's, drawn from an explicit ``torch.Generator``: convolutions Kaiming-normal
(``fan_out``, ReLU gain), batch norms ``weight = 1, bias = 0``, the linear head PyTorch's default
(``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weight and bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STEMS = ("imagenet", "small")


class PretrainedWeightsError(ValueError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped keys); the message lists them."""


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with a residual connection (ResNet-18/34). ``(n, in, H, W) -> (n, planes, H/s, W/s)``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1 x 1 reduce, 3 x 3 (strided, "v1.5"), 1 x 1 expand by 4, with a residual (ResNet-50).

    ``(n, in, H, W) -> (n, 4 planes, H/s, W/s)``.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet: stem, four stages of residual blocks, global average pooling and a linear head ``fc``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage (ResNet-18: ``(2, 2, 2, 2)``; ResNet-50: ``(3, 4, 6, 3)``).
        out_features: outputs of the head (1000 for ImageNet; 1 for a binary logit, the convention of the
            project's binary-task algorithms; 2 for a two-way softmax).
        width: channel multiplier; stage ``i`` has ``round(64 * 2**i * width)`` planes (1.0: the standard net).
        stem: ``"imagenet"`` (7 x 7 stride-2 convolution + 3 x 3 stride-2 max-pool: 224 -> 56) or ``"small"``
            (3 x 3 stride-1 convolution, no pooling: for tiny inputs). Only ``"imagenet"`` at width 1 fits
            torchvision checkpoints.
        normalize_input: subtract ``input_mean`` and divide by ``input_std`` per channel first, so inputs are
            pixels in ``[0, 1]``. The two are non-persistent buffers: not in :meth:`state_dict`.
        input_mean, input_std: per-channel statistics (default ImageNet's).
        zero_init_residual: zero the last batch-norm weight of each block (each block starts as the identity).
        generator: draws the initial weights; without one the global RNG is used.

    Shapes: ``(n, 3, H, W) -> (n, out_features)`` for any ``H, W`` large enough for the stem's downsampling
    (ImageNet stem: 32 x total stride, so at least ~32 pixels; small stem: at least 8).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int] | list[int],
        out_features: int = 1000,
        width: float = 1.0,
        stem: str = "imagenet",
        normalize_input: bool = False,
        input_mean: tuple[float, float, float] = IMAGENET_MEAN,
        input_std: tuple[float, float, float] = IMAGENET_STD,
        zero_init_residual: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        # The layers' own constructors draw a default initialisation from the global RNG; it is overwritten by
        # ``_initialise``. With a generator, fork the global RNG so that building a model leaves it untouched.
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self._build(block, layers, out_features, width, stem, normalize_input, input_mean, input_std)
        _initialise(self, zero_init_residual, generator)

    def _build(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int] | list[int],
        out_features: int,
        width: float,
        stem: str,
        normalize_input: bool,
        input_mean: tuple[float, float, float],
        input_std: tuple[float, float, float],
    ) -> None:
        if len(layers) != 4 or any(int(count) < 1 for count in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if out_features < 1:
            raise ValueError(f"out_features must be >= 1, got {out_features}")
        if len(input_mean) != 3 or len(input_std) != 3 or min(input_std) <= 0:
            raise ValueError(f"input_mean and input_std need 3 channels, std > 0; got {input_mean}, {input_std}")
        planes = [max(1, round(64 * 2**stage * width)) for stage in range(4)]
        self.block_name, self.width, self.stem, self.out_features = block.__name__, float(width), stem, out_features
        self.normalize_input = normalize_input
        self.register_buffer("input_mean", torch.tensor(input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(input_std).view(1, 3, 1, 1), persistent=False)

        stem_planes = planes[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, stem_planes, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, stem_planes, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_planes)
        self.relu = nn.ReLU(inplace=True)
        in_planes = stem_planes
        stages = []
        for stage, (stage_planes, count) in enumerate(zip(planes, layers, strict=True)):
            stage_module, in_planes = _make_stage(block, in_planes, stage_planes, int(count), 1 if stage == 0 else 2)
            stages.append(stage_module)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, out_features)
        self.feature_dim = in_planes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W) -> (n, feature_dim)``: the pooled representation before the head."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (n, 3, H, W) image batch, got shape {tuple(x.shape)}")
        if self.normalize_input:
            x = (x - self.input_mean) / self.input_std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W) -> (n, out_features)`` logits."""
        return self.fc(self.features(x))

    def replace_head(self, out_features: int, generator: torch.Generator | None = None) -> None:
        """Swap ``fc`` for a freshly initialised ``feature_dim -> out_features`` linear layer."""
        if out_features < 1:
            raise ValueError(f"out_features must be >= 1, got {out_features}")
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self.fc = nn.Linear(self.feature_dim, out_features).to(self.fc.weight.device, self.fc.weight.dtype)
        _initialise_linear(self.fc, generator)
        self.out_features = out_features


def resnet18(out_features: int = 1000, **kwargs) -> ResNet:
    """ResNet-18: :class:`BasicBlock` x (2, 2, 2, 2); 11,689,512 parameters with the default 1000-way head."""
    return ResNet(BasicBlock, (2, 2, 2, 2), out_features=out_features, **kwargs)


def resnet50(out_features: int = 1000, **kwargs) -> ResNet:
    """ResNet-50: :class:`Bottleneck` x (3, 4, 6, 3); 25,557,032 parameters with the default 1000-way head."""
    return ResNet(Bottleneck, (3, 4, 6, 3), out_features=out_features, **kwargs)


ARCHITECTURES = {"resnet18": resnet18, "resnet50": resnet50}


@dataclass(frozen=True)
class ResNetPreset:
    """A ResNet configuration together with the input resolution it is meant for.

    Attributes:
        name: the preset's key in :data:`PRESETS`.
        architecture: a key of :data:`ARCHITECTURES`.
        width: channel multiplier.
        stem: ``"imagenet"`` or ``"small"``.
        resolution: side of the square input images (pass it to the data loader).
        description: one line for reports.
    """

    name: str
    architecture: str
    width: float
    stem: str
    resolution: int
    description: str


PRESETS: dict[str, ResNetPreset] = {
    "cpu": ResNetPreset(
        "cpu",
        "resnet18",
        0.5,
        "imagenet",
        64,
        "ResNet-18 at half width (32-256 channels), 64 x 64 inputs, ImageNet stem: trains on a 2-core CPU",
    ),
    "paper": ResNetPreset(
        "paper",
        "resnet50",
        1.0,
        "imagenet",
        224,
        "ResNet-50, 224 x 224 inputs (the paper's and Sagawa et al.'s set-up): for a GPU",
    ),
}


def build_resnet(
    preset: str | ResNetPreset,
    out_features: int = 1,
    *,
    normalize_input: bool = True,
    generator: torch.Generator | None = None,
    **overrides,
) -> ResNet:
    """The ResNet of a preset (a key of :data:`PRESETS` or a :class:`ResNetPreset`).

    Args:
        preset: ``"cpu"``, ``"paper"`` or a custom :class:`ResNetPreset`.
        out_features: outputs of the task head (1: a binary logit).
        normalize_input: apply the ImageNet mean/std inside the model (inputs in ``[0, 1]``).
        generator: draws the initial weights.
        **overrides: further :class:`ResNet` keyword arguments (e.g. ``zero_init_residual=True``).
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown ResNet preset {preset!r}; valid: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    if preset.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {preset.architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[preset.architecture](
        out_features=out_features,
        width=preset.width,
        stem=preset.stem,
        normalize_input=normalize_input,
        generator=generator,
        **overrides,
    )


@dataclass(frozen=True)
class PretrainedReport:
    """What :func:`load_pretrained` did: how many tensors it loaded, and whether the head was kept or replaced."""

    path: str
    loaded: int
    head_loaded: bool


def load_pretrained(model: ResNet, path: Path | str) -> PretrainedReport:
    """Load a local torchvision-format ImageNet state dict into ``model``, keeping the model's own task head.

    The checkpoint may be a bare state dict or wrap it under ``"state_dict"`` or ``"model"``; a ``"module."``
    prefix (from ``DataParallel``) is stripped. Every backbone tensor of the model must be in the checkpoint with
    the same shape and the checkpoint may hold nothing else (``num_batches_tracked`` counters may be absent, as in
    older torchvision files). The head ``fc`` is loaded only when its shape matches (a 1000-way model); otherwise
    the 1000-way ImageNet head is dropped and the model's freshly initialised task head is kept.

    Raises:
        FileNotFoundError: no file at ``path``.
        PretrainedWeightsError: missing, unexpected or mis-shaped keys (listed), e.g. a width-0.5 or small-stem
            model, or a ResNet-18 checkpoint given to a ResNet-50.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint {path} does not exist (nothing is downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise PretrainedWeightsError(f"{path} does not hold a state dict of tensors")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    own = model.state_dict()
    head = {"fc.weight", "fc.bias"}
    missing = [key for key in own if key not in state and key not in head and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own]
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state and key not in head and state[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label}: {'; '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
        raise PretrainedWeightsError(
            f"{path} does not fit this {model.block_name} ResNet (width {model.width:g}, stem {model.stem!r}): "
            + " | ".join(parts)
        )
    head_loaded = all(key in state and state[key].shape == own[key].shape for key in head)
    load = {key: value for key, value in state.items() if key not in head or head_loaded}
    model.load_state_dict(load, strict=False)
    return PretrainedReport(str(path), len(load), head_loaded)


def _make_stage(
    block: type[BasicBlock] | type[Bottleneck], in_planes: int, planes: int, count: int, stride: int
) -> tuple[nn.Sequential, int]:
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or in_planes != out_planes:
        downsample = nn.Sequential(
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
        )
    blocks = [block(in_planes, planes, stride, downsample)]
    blocks += [block(out_planes, planes) for _ in range(count - 1)]
    return nn.Sequential(*blocks), out_planes


def _initialise(model: ResNet, zero_init_residual: bool, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
        _initialise_linear(model.fc, generator)
        if zero_init_residual:
            for module in model.modules():
                if isinstance(module, Bottleneck):
                    module.bn3.weight.zero_()
                elif isinstance(module, BasicBlock):
                    module.bn2.weight.zero_()


def _initialise_linear(linear: nn.Linear, generator: torch.Generator | None) -> None:
    # PyTorch's default (Kaiming-uniform with a = sqrt(5)), drawn from ``generator``.
    bound = 1.0 / linear.in_features**0.5
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound, generator=generator)
        linear.bias.uniform_(-bound, bound, generator=generator)
