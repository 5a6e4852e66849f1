"""Similarity losses over a batch of representations z (b, d) and its targets (`loss_targets`):
multi-hot labels (b, C) uint8, or for a data set without labels neighbour rows (b, 1 + k) int64.

One small class per loss, picked by name from `LOSSES`. Relevance is label overlap: items i and j
are similar when they share at least one label; without labels, when one is among the other's k
true nearest training items (the training set's k-NN graph, made symmetric;
`gslbench.data.neighbours`). The losses other than softmax see only the similarity matrix, so
they and every method train unchanged on either.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gslbench.data.featurefile import Split
from gslbench.data.neighbours import neighbour_rows
from gslbench.errors import GslbenchError


def loss_targets(train: Split) -> np.ndarray:
    """What a loss takes per training item: its multi-hot labels (n, C) uint8, or for a data set
    without labels its neighbour rows (n, 1 + k) int64 (`neighbour_rows`: its own position, then
    its k nearest training items')."""
    return train.labels if train.neighbours is None else neighbour_rows(train.neighbours)


def batches(order: torch.Tensor, targets: torch.Tensor, batch_size: int,
             generator: torch.Generator) -> list[torch.Tensor]:
    """An epoch's batches of training positions, on `targets`' device: `order` (n,) int64, a
    permutation on the CPU, split into batches of `batch_size`; for neighbour rows (int64
    targets of `loss_targets`, a data set without labels) into batches of batch_size // 2
    items, each followed by one of its k neighbours drawn by `generator` (a random batch of a
    large set holds almost no pair of neighbours: the loss would see no positive)."""
    if targets.dtype != torch.int64 or targets.shape[1] < 2:
        return list(order.to(targets.device).split(batch_size))
    column = 1 + torch.randint(targets.shape[1] - 1, (len(order),), generator=generator)
    pairs = torch.stack([order, targets.cpu()[order, column]], dim=1)  # (n, 2): item, neighbour
    return [chunk.T.reshape(-1).to(targets.device) for chunk in pairs.split(max(1, batch_size // 2))]


def similarity_matrix(targets: torch.Tensor, by_neighbours: bool = False) -> torch.Tensor:
    """(b, b) bool: which items of a batch are similar (each item is similar to itself).

    targets: (b, C) multi-hot labels: True where two items share a label; or with
    `by_neighbours`, (b, 1 + k) int64 neighbour rows (`loss_targets`): True where either item
    lists the other among its k nearest neighbours."""
    if by_neighbours:
        own, listed = targets[:, 0], targets[:, 1:]
        lists = (listed[:, None, :] == own[None, :, None]).any(dim=2)  # [i, j]: i lists j
        return lists | lists.T | (own[:, None] == own[None, :])  # an item twice: itself
    labels = targets.float()
    return labels @ labels.T > 0


def _off_diagonal(x: torch.Tensor) -> torch.Tensor:
    """(b, b) bool: True for the pairs i != j of a batch of b (x: (b, ...))."""
    return ~torch.eye(len(x), dtype=torch.bool, device=x.device)


class _PairLoss(nn.Module):
    """A loss over the batch's similarity matrix; `n_classes` = 0: the targets are neighbour
    rows (a data set without labels), else multi-hot labels (`similarity_matrix`)."""

    def __init__(self, n_classes: int, dim: int, margin: float) -> None:
        super().__init__()
        self.by_neighbours = n_classes == 0
        self.margin = margin

    def similar(self, targets: torch.Tensor) -> torch.Tensor:
        """The batch's (b, b) bool similarity (`similarity_matrix`)."""
        return similarity_matrix(targets, self.by_neighbours)


class PairwiseCosineLoss(_PairLoss):
    """DQN-style: mean over pairs i != j of (s_ij - cos(z_i, z_j))^2 with s_ij in {-1, 1}."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (b, d) float, labels (b, ...) its targets (`loss_targets`) -> scalar loss."""
        unit = F.normalize(z, dim=1)
        cosine = unit @ unit.T
        target = self.similar(labels).float() * 2 - 1
        return ((target - cosine)[_off_diagonal(z)] ** 2).mean()


class _MarginLoss(_PairLoss):
    """A loss over the batch's (b, b) Euclidean distances with a margin."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """z (b, d) float, labels (b, ...) its targets (`loss_targets`) -> scalar loss."""
        return self.from_distances(torch.cdist(z, z), self.similar(labels))


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
        if n_classes == 0:
            raise GslbenchError("--loss softmax needs labels; this data set has none (its "
                                "relevance is by neighbours): use a pairwise loss")
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
