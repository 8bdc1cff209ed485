"""Models: plain ``nn.Module`` classes, no torchvision."""

from gradstarve.models.mlp import MLP

__all__ = ["MLP"]
