"""Similarity losses over a batch of representations z (b, d) and multi-hot labels (b, C).

One small class per loss, picked by name from `LOSSES`. Relevance is label overlap: items i and j
are similar when they share at least one label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def similarity_matrix(labels: torch.Tensor) -> torch.Tensor:
    """(b, C) multi-hot -> (b, b) bool: True where two items share a label."""
    labels = labels.float()
    return labels @ labels.T > 0


def _off_diagonal(z: torch.Tensor) -> torch.Tensor:
    """(b, b) bool: True for the pairs i != j of a batch of b."""
    return ~torch.eye(len(z), dtype=torch.bool, device=z.device)


class PairwiseCosineLoss(nn.Module):
    """DQN-style: mean over pairs i != j of (s_ij - cos(z_i, z_j))^2 with s_ij in {-1, 1}."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(z, dim=1)
        cosine = unit @ unit.T
        target = similarity_matrix(labels).float() * 2 - 1
        return ((target - cosine)[_off_diagonal(z)] ** 2).mean()


class ContrastiveLoss(nn.Module):
    """Hadsell et al.: similar pairs pull (d^2), dissimilar push to the margin (max(0, m - d)^2)."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(z, z)
        pull = distance**2
        push = F.relu(self.margin - distance) ** 2
        return torch.where(similarity_matrix(labels), pull, push)[_off_diagonal(z)].mean()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss: per anchor, the farthest positive against the nearest negative."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(z, z)
        similar = similarity_matrix(labels)
        positive = similar & _off_diagonal(z)
        hardest_positive = torch.where(positive, distance, torch.zeros_like(distance)).amax(1)
        hardest_negative = torch.where(similar, torch.full_like(distance, torch.inf), distance).amin(1)
        valid = positive.any(1) & (~similar).any(1)
        if not valid.any():
            return z.sum() * 0.0
        return F.relu(hardest_positive - hardest_negative + self.margin)[valid].mean()


class SoftmaxLoss(nn.Module):
    """Cross-entropy through a linear classifier on z (binary cross-entropy for multi-label)."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, n_classes)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(z)
        if (labels.sum(1) == 1).all():
            return F.cross_entropy(logits, labels.argmax(1))
        return F.binary_cross_entropy_with_logits(logits, labels.float())


LOSSES: dict[str, type[nn.Module]] = {
    "pairwise": PairwiseCosineLoss,
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "softmax": SoftmaxLoss,
}
