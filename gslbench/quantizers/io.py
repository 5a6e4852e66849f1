"""A fitted quantizer in an HDF5 group: `save_quantizer` writes it, `load_quantizer` rebuilds it
bit-exact (quantizer.h5 and codes.h5 both hold one)."""

from __future__ import annotations

import json

import h5py
import numpy as np

from gslbench.errors import GslbenchError
from gslbench.quantizers.base import Quantizer
from gslbench.quantizers.identity import Identity
from gslbench.quantizers.registry import make_quantizer

ATTRS = ("name", "dim", "bits", "sub_bits", "seed", "options")


def save_quantizer(quantizer: Quantizer | Identity, group: h5py.Group) -> None:
    """Write the trained state into `group`: its arrays as datasets (`codebooks` (M, K, dsub or
    dim) float32, and `rotation` (dim, dim) float32 for OPQ), attrs name, dim, bits, sub_bits,
    seed and options (JSON). Non-finite arrays are refused."""
    state = quantizer.state()
    for key, array in state.items():
        _check_finite(array, f"the {quantizer.name} quantizer's {key}")
    group.attrs.update(name=quantizer.name, dim=quantizer.dim, bits=quantizer.bits,
                       sub_bits=quantizer.sub_bits, seed=quantizer.seed,
                       options=json.dumps(quantizer.options, sort_keys=True))
    for key, array in state.items():
        group.create_dataset(key, data=array)


def load_quantizer(group: h5py.Group) -> Quantizer | Identity:
    """Rebuild the quantizer `save_quantizer` wrote into `group`, bit-exact."""
    where = f"{group.file.filename}:{group.name}"
    missing = [key for key in ATTRS if key not in group.attrs]
    if missing:
        raise GslbenchError(f"{where}: no quantizer attribute {missing[0]!r}")
    attrs = {key: group.attrs[key] for key in ATTRS}
    try:
        if attrs["name"] == Identity.name:
            return Identity(int(attrs["dim"]))
        quantizer = make_quantizer(str(attrs["name"]), int(attrs["dim"]), int(attrs["bits"]),
                                   int(attrs["sub_bits"]), int(attrs["seed"]),
                                   **json.loads(attrs["options"]))
    except (GslbenchError, ValueError, TypeError) as exc:
        raise GslbenchError(f"{where}: bad quantizer attributes ({exc})") from None
    arrays = {}
    for key, shape in quantizer.state_shapes().items():
        if not isinstance(group.get(key), h5py.Dataset):
            raise GslbenchError(f"{where}: no {key!r} dataset")
        if group[key].shape != shape:
            raise GslbenchError(
                f"{where}/{key} has shape {group[key].shape}, but its attributes "
                f"({quantizer.name}, dim {quantizer.dim}, bits {quantizer.bits}, "
                f"sub_bits {quantizer.sub_bits}) need {shape}"
            )
        arrays[key] = np.asarray(group[key], dtype=np.float32)
        _check_finite(arrays[key], f"{where}/{key}")
    return quantizer.restore(arrays)


def _check_finite(array: np.ndarray, where: str) -> None:
    if not np.isfinite(array).all():
        raise GslbenchError(f"{where} holds non-finite values (NaN or inf)")
