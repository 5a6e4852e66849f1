"""The CNN cut in two for fine-tuning (`train_blocks = N`): the frozen `Trunk` (stem and all
blocks but the last N), whose activations are cached (`gslbench.data.activations`), and the
trainable `Top` (the last N blocks, the head convolution, global average pooling), trained with
the MLP head; `split_network` cuts a backbone of `gslbench.data.backbones`. At the ImageNet
weights, Top(Trunk(x)) is the feature `backbones.extract_features` computes. Its own module
because its classes subclass torch's: importing it loads torch, which the registries of data
sets and backbones do not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gslbench.data.backbones import get_backbone, load_model
from gslbench.errors import GslbenchError


class Trunk(nn.Module):
    """The frozen bottom of an EfficientNet: the stem and the blocks before `cut`, or only the
    blocks from `start` to `cut` (their input: the activations below block `start`).

    (b, 3, S, S) network input -> (b, C, H, W) activations (192 x 2 x 2 for efficientnet-lite0 at
    64 px below its last 1 to 4 blocks), channels-last inside (10% faster on the CPU)."""

    def __init__(self, network: nn.Module, cut: int, start: int = 0) -> None:
        super().__init__()
        self.stem = (nn.Sequential(network._conv_stem, network._bn0, network._swish) if start == 0
                     else nn.Identity())
        self.blocks = nn.ModuleList(network._blocks[start:cut])
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            x = block(x)
        return x


class SmallMapDepthwise(nn.Module):
    """A stride-1 depthwise convolution with 'same' padding (odd kernel), computed with only the
    kernel taps that can meet the input: on an H x W map a tap more than H - 1 rows (W - 1
    columns) from the centre only ever multiplies padding. So its output, and its gradients, are
    the convolution's (the other taps' gradient is 0 there too). At 64 px the 5 x 5 kernels of
    the last stage meet 2 x 2 maps, where the backward pass of the cropped 3 x 3 kernel is 6x
    faster (44 ms to 7 ms for 128 items on one core). (b, C, H, W) -> (b, C, H, W)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (h, w) = self.conv.kernel_size, x.shape[-2:]
        reach_h, reach_w = min(kh // 2, h - 1), min(kw // 2, w - 1)
        weight = self.conv.weight
        if (reach_h, reach_w) != (kh // 2, kw // 2):
            weight = weight[:, :, kh // 2 - reach_h:kh // 2 + reach_h + 1,
                            kw // 2 - reach_w:kw // 2 + reach_w + 1]
        return F.conv2d(F.pad(x, (reach_w, reach_w, reach_h, reach_h)), weight, self.conv.bias,
                        groups=self.conv.groups)


class Top(nn.Module):
    """The trainable top of an EfficientNet: the blocks from `cut` on, the head convolution with
    its batch norm and ReLU6, and global average pooling. (b, C, H, W) -> (b, 1280).

    Always in inference mode: its batch norms normalise with their ImageNet running statistics
    (their scale and shift train with the convolutions) and drop connect is off, so a batch is
    transformed the same way in training and when embedding. Channels-last on the CPU: 1.6x
    faster steps on the 2 x 2 maps of 64 px inputs; stride-1 depthwise convolutions run as
    `SmallMapDepthwise`.
    """

    def __init__(self, network: nn.Module, cut: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(network._blocks[cut:])
        for block in self.blocks:
            conv = block._depthwise_conv
            if tuple(conv.stride) == (1, 1) and all(k % 2 for k in conv.kernel_size):
                block._depthwise_conv = SmallMapDepthwise(conv)
        self.head = nn.Sequential(network._conv_head, network._bn1, network._swish)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))

    def train(self, mode: bool = True) -> Top:
        """Stay in inference mode whatever `mode` (see the class docstring)."""
        return super().train(False)


def split_network(name: str, image_size: int, train_blocks: int,
                  trunk_from: int = 0) -> tuple[Trunk, Top]:
    """The CNN `name` at `image_size` cut below its last `train_blocks` blocks: the frozen trunk
    (no gradients; from block `trunk_from` on, when its input is the activations below that
    block rather than the image) and the top, whose parameters require gradients."""
    spec = get_backbone(name)
    if not spec.blocks:
        raise GslbenchError(f"--train-blocks {train_blocks}: {name} is not a CNN to fine-tune")
    if not 1 <= train_blocks <= spec.blocks:
        raise GslbenchError(f"--train-blocks {train_blocks}: {name} has {spec.blocks} blocks "
                            f"(1 to {spec.blocks} can be fine-tuned)")
    network = load_model(name, image_size)
    cut = spec.blocks - train_blocks
    top = Top(network, cut)
    top.requires_grad_(True)
    return Trunk(network, cut, trunk_from).eval(), top
