"""Building blocks shared by the saccader and the baselines: residual blocks, ResNets, MLPs.

Shape legend: B batch, C channels, H height, W width, F feature width.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Activation = Callable[[], nn.Module]
Norm = Callable[[int], nn.Module]  # channels -> a normalisation layer


def elu() -> nn.Module:
    """ELU (the paper's activation), in place: one activation-sized tensor less per layer, which
    is most of the saccader's inference memory; autograd supports it (backward uses the output)."""
    return nn.ELU(inplace=True)


def relu() -> nn.Module:
    """ReLU in place, as torchvision's ResNet-18 has it."""
    return nn.ReLU(inplace=True)


def resize_square(images_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to size×size; antialiased when shrinking so small proxies are not aliased."""
    if images_BCHW.shape[-2:] == (size, size):
        return images_BCHW
    return F.interpolate(
        images_BCHW, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def mlp(in_dim: int, hidden_dim: int, out_dim: int, act: Activation = elu) -> nn.Sequential:
    """Two-layer perceptron: Linear → act → Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), act(), nn.Linear(hidden_dim, out_dim))


def group_norm(channels: int, eps: float = 1e-5) -> nn.Module:
    """Group norm (8 groups, or fewer where 8 does not divide `channels`): per-example
    statistics, the same in training and at inference."""
    return nn.GroupNorm(math.gcd(8, channels), channels, eps=eps)


NORMS: dict[str, Norm] = {"batch": nn.BatchNorm2d, "group": group_norm}


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with normalisation and a (projected) identity shortcut."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, act: Activation, norm: Norm = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = norm(out_ch)
        self.act = act()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm(out_ch)
            )

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        out_BCHW = self.act(self.bn1(self.conv1(x_BCHW)))
        out_BCHW = self.bn2(self.conv2(out_BCHW))
        return self.act(out_BCHW + self.shortcut(x_BCHW))


def resnet_stages(
    in_ch: int,
    width: int,
    blocks: list[int],
    act: Activation,
    *,
    first_stride: int,
    norm: Norm = nn.BatchNorm2d,
) -> tuple[nn.Sequential, int]:
    """Stages of basic blocks, the width doubling and the resolution halving from stage to stage.

    Returns the stages and their output channels.
    """
    layers: list[nn.Module] = []
    ch = in_ch
    for i, n_blocks in enumerate(blocks):
        out_ch = width * 2**i
        for j in range(n_blocks):
            stride = (first_stride if i == 0 else 2) if j == 0 else 1
            layers.append(BasicBlock(ch, out_ch, stride, act, norm))
            ch = out_ch
    return nn.Sequential(*layers), ch


class SmallResNet(nn.Module):
    """Encoder for small images (the 64×64 proxy, the W×W glimpse): a 3×3 stem, residual stages
    that each halve the resolution, global average pooling and a linear map to `out_dim`."""

    def __init__(
        self,
        in_ch: int,
        out_dim: int,
        *,
        width: int,
        blocks: list[int],
        act: Activation = elu,
        norm: str = "batch",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        norm_layer = functools.partial(NORMS[norm], eps=norm_eps)
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1, bias=False), norm_layer(width), act()
        )
        self.stages, ch = resnet_stages(width, width, blocks, act, first_stride=2, norm=norm_layer)
        self.proj = nn.Linear(ch, out_dim)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        feat_BCHW = self.stages(self.stem(x_BCHW))
        return self.proj(feat_BCHW.mean(dim=(2, 3)))


class ResNet(nn.Module):
    """ResNet-18-class feature extractor (He et al. 2016) in plain PyTorch: a 7×7/2 stem, a 3×3/2
    max-pool, stages of basic blocks and global average pooling → a B×F vector (`out_dim` = F).

    The head is not included: the patch baseline sums these features over patches first.
    """

    def __init__(
        self,
        in_ch: int,
        *,
        width: int = 64,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        act: Activation = relu,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            act(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.stages, self.out_dim = resnet_stages(width, width, list(blocks), act, first_stride=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x_BCHW)).mean(dim=(2, 3))
