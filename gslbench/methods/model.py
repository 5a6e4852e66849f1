"""The network: an MLP head on frozen features, its output L2-normalised, so that squared L2
distances between representations rank like their cosines; when fine-tuning (`train_blocks` > 0)
the CNN's trainable top (`gslbench.data.finetuning.Top`) comes first, on cached trunk activations."""

from __future__ import annotations

from typing import Any, ClassVar

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingNet(nn.Module):
    """Standardise (b, dim_in) features, MLP with one hidden layer, L2-normalise: (b, dim_out)."""

    embed_batch: ClassVar[int] = 4096  # rows per forward pass in `embed`

    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim_in))
        self.register_buffer("scale", torch.ones(dim_in))
        self.layers = nn.Sequential(
            nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out)
        )

    def set_standardisation(self, features: np.ndarray) -> None:
        """Standardise inputs by the (n, dim_in) float32 training features' mean and std."""
        self.mean.copy_(torch.from_numpy(features.mean(0)))
        self.scale.copy_(torch.from_numpy(features.std(0) + 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers((x - self.mean) / self.scale), dim=1)


class FineTunedNet(nn.Module):
    """The CNN's top, then the MLP head: (b, C, H, W) trunk activations -> (b, dim_out).

    At the ImageNet weights the top's output is the frozen feature, so the head is standardised
    by the training features as in frozen mode, and both modes start from the same network."""

    embed_batch: ClassVar[int] = 512

    def __init__(self, top: nn.Module, head: EmbeddingNet) -> None:
        super().__init__()
        self.top, self.head = top, head

    def set_standardisation(self, features: np.ndarray) -> None:
        """Standardise the head's (n, 1280) float32 input by the training features; a channel
        constant on them (a ReLU6 channel the frozen network never wakes: std 0) is divided by 1,
        not by the head's 1e-6, since fine-tuning may wake it: divided by 1e-6, it collapsed
        every Fashion-MNIST run within 3 batches. Either way it is 0 at the start."""
        self.head.set_standardisation(features)
        self.head.scale[torch.from_numpy(features.std(0) == 0)] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(x))


def build_model(config: Any, dim_in: int, top: nn.Module | None = None
                ) -> EmbeddingNet | FineTunedNet:
    """The run's network for (b, dim_in) features, or with `top` (the CNN's trainable top, whose
    output has dim_in channels) for its trunk activations: hidden width and output dimension
    from `config` (the run's `RunConfig`; typed Any, as a method's config is, since the methods
    sit below gslbench.config)."""
    head = EmbeddingNet(dim_in, config.hidden, config.dim_out)
    return head if top is None else FineTunedNet(top, head)


@torch.no_grad()
def embed(model: EmbeddingNet | FineTunedNet, inputs: np.ndarray | h5py.Dataset) -> np.ndarray:
    """(n, dim_in) features or (n, C, H, W) activations, float32 (an array, or an HDF5 dataset
    read slice by slice) -> (n, dim_out) float32 representations, computed in batches on the
    model's device."""
    model.eval()
    device = next(model.parameters()).device
    step = model.embed_batch
    blocks = [
        model(torch.from_numpy(np.asarray(inputs[start : start + step])).to(device)).cpu().numpy()
        for start in range(0, len(inputs), step)
    ]
    return np.concatenate(blocks).astype(np.float32, copy=False)
