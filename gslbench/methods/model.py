"""The network: an MLP head on frozen features, its output L2-normalised, so that squared L2
distances between representations rank like their cosines."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gslbench.config import RunConfig


class EmbeddingNet(nn.Module):
    """Standardise (b, dim_in) features, MLP with one hidden layer, L2-normalise: (b, dim_out)."""

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


def build_model(config: RunConfig, dim_in: int) -> EmbeddingNet:
    """The run's network for (b, dim_in) features: hidden width and output dimension from config."""
    return EmbeddingNet(dim_in, config.hidden, config.dim_out)


@torch.no_grad()
def embed(model: nn.Module, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """(n, dim_in) float32 features -> (n, dim_out) float32 representations, in batches."""
    model.eval()
    blocks = [
        model(torch.from_numpy(features[start : start + batch_size])).numpy()
        for start in range(0, len(features), batch_size)
    ]
    return np.concatenate(blocks).astype(np.float32, copy=False)
