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


def _off_diagonal(x: torch.Tensor) -> torch.Tensor:
    """(b, b) bool: True for the pairs i != j of a batch of b (x: (b, ...))."""
    return ~torch.eye(len(x), dtype=torch.bool, device=x.device)


class PairwiseCosineLoss(nn.Module):
    """DQN-style: mean over pairs i != j of (s_ij - cos(z_i, z_j))^2 with s_ij in {-1, 1}."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (b, d) float, labels (b, C) multi-hot -> scalar loss."""
        unit = F.normalize(z, dim=1)
        cosine = unit @ unit.T
        target = similarity_matrix(labels).float() * 2 - 1
        return ((target - cosine)[_off_diagonal(z)] ** 2).mean()


class _MarginLoss(nn.Module):
    """A loss over the batch's (b, b) Euclidean distances with a margin."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (b, d) float, labels (b, C) multi-hot -> scalar loss."""
        return self.from_distances(torch.cdist(z, z), similarity_matrix(labels))


class ContrastiveLoss(_MarginLoss):
    """Hadsell et al.: similar pairs pull (d^2), dissimilar push to the margin (max(0, m - d)^2),
    averaged over the pairs i != j."""

    def from_distances(self, distance: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
        """(b, b) distances and (b, b) bool similarity -> scalar loss."""
        pull = distance**2
        push = F.relu(self.margin - distance) ** 2
        return torch.where(similar, pull, push)[_off_diagonal(distance)].mean()


class TripletLoss(_MarginLoss):
    """Batch-hard triplet loss: per anchor, the farthest positive against the nearest negative,
    max(0, d(a, p) - d(a, n) + margin), averaged over the anchors that have both."""

    def from_distances(self, distance: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
        """(b, b) distances and (b, b) bool similarity -> scalar loss."""
        positive = similar & _off_diagonal(distance)
        hardest_positive = torch.where(positive, distance, torch.zeros_like(distance)).amax(1)
        hardest_negative = torch.where(similar, torch.full_like(distance, torch.inf), distance).amin(1)
        valid = positive.any(1) & (~similar).any(1)
        if not valid.any():
            return distance.sum() * 0.0
        return F.relu(hardest_positive - hardest_negative + self.margin)[valid].mean()


class SoftmaxLoss(nn.Module):
    """Cross-entropy through a linear classifier on z (binary cross-entropy for multi-label)."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, n_classes)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (b, d) float, labels (b, C) multi-hot -> scalar loss."""
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
