"""`pca`: the baseline that trains nothing: the frozen features projected to dim_out by PCA, then
the quantizer's final fit, as for every method."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import
from gslbench.methods.base import Method

if TYPE_CHECKING:
    from gslbench.methods.model import EmbeddingNet

torch = lazy_import("torch")
networks = lazy_import("gslbench.methods.model")  # subclasses torch's nn.Module: loaded to build


def pca_projection(features: np.ndarray, dim_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The projection of (n, d) float32 features to dim_out dimensions: (mean (d,), components
    (dim_out, d)), both float32, so that a feature x maps to components @ (x - mean).

    d > dim_out: the features are centred by their mean and projected on their top dim_out
    principal directions (the right singular vectors of the centred (n, d) matrix, in float64,
    by decreasing variance), each signed so that its entry of largest magnitude is positive (the
    first such entry on a tie): deterministic for given features. d <= dim_out: the identity,
    padded with zero rows (the feature in the first d dimensions, zeros after them) and no
    centring, so that raw vectors are quantized as they are (as the field's raw baselines do)."""
    n, d = features.shape
    if d <= dim_out:
        return np.zeros(d, np.float32), np.eye(dim_out, d, dtype=np.float32)
    mean = features.mean(axis=0, dtype=np.float64)
    _, _, right = np.linalg.svd(features - mean, full_matrices=False)
    components = right[:dim_out]
    largest = np.argmax(np.abs(components), axis=1)
    components *= np.sign(components[np.arange(dim_out), largest])[:, None]
    return mean.astype(np.float32), components.astype(np.float32)


class PCAMethod(Method):
    """No gradient step: the network is `network`'s projection, fixed before any epoch; the
    codebooks are the final fit of the training items' projections (`gslbench.methods.loop`:
    no epoch is trained, no checkpoint read or written; the training settings do not apply and
    are reset, `unused_settings`).

    The projection is written into the run's MLP head, so that encode, export and every reader
    load it as any run's network (model.pt): the head's standardisation subtracts the PCA mean
    (scale 1), its first layer computes the projection p and its negation into 2 * dim_out hidden
    units ([P; -P], the other units 0), and its second layer gives back relu(p) - relu(-p) = p,
    exactly in floating point (one of the two is 0); the head then L2-normalises p, as for every
    method (`gslbench.methods.model.EmbeddingNet`: F.normalize of the output, dim 1, eps 1e-12).
    So the hidden width must be at least 2 * dim_out (the default 256 holds dim_out up to 128).

    `gslbench.testing`'s method checks pass (tests/test_pca.py): the reproducibility check (two
    trainings give the same codes) tests pca as any method; the representation, penalty and
    gradient checks pass on the base's identity and zero, which pca never uses (it takes no
    step), so they say nothing about it. tests/test_pca.py checks the projection against numpy's
    own PCA instead.
    """

    name = "pca"
    trains_against_codebooks = False
    plain_warmup = False
    trains = False
    unused_settings = ("loss", "epochs", "warmup_epochs", "epochs_per_refit", "batch_size", "lr",
                       "weight_decay", "margin", "train_blocks")
    summary = "no training: the frozen features' PCA to dim_out, then the quantizer"

    @classmethod
    def network(cls, config: Any, features: np.ndarray) -> EmbeddingNet:
        """The run's network for its (n, d) float32 training features (docstring above)."""
        dim_out, hidden = config.dim_out, config.hidden
        if hidden < 2 * dim_out:
            raise GslbenchError(f"--hidden {hidden}: pca holds its projection in 2 x --dim-out "
                                f"= {2 * dim_out} hidden units; give --hidden {2 * dim_out} or more")
        mean, components = pca_projection(features, dim_out)
        model = networks.build_model(config, features.shape[1])
        first, second = model.layers[0], model.layers[2]
        weight = np.zeros((hidden, features.shape[1]), np.float32)
        weight[:dim_out], weight[dim_out:2 * dim_out] = components, -components
        back = np.zeros((dim_out, hidden), np.float32)
        back[:, :dim_out], back[:, dim_out:2 * dim_out] = np.eye(dim_out), -np.eye(dim_out)
        with torch.no_grad():
            model.mean.copy_(torch.from_numpy(mean))
            model.scale.fill_(1.0)
            first.weight.copy_(torch.from_numpy(weight))
            second.weight.copy_(torch.from_numpy(back))
            first.bias.zero_()
            second.bias.zero_()
        return model
