"""What a training method is: a name, its own knobs, a label, and how it trains.

Every method shares the network, the similarity loss, the optimizer, the schedule and the
quantizer (`gslbench.methods.loop`); a method only says how the representation z reaches the
similarity loss (`representation`) and what is added to that loss (`penalty`); both may ask the
quantizer for the batch's `assignment`, computed once per batch. Its knobs are
`Setting`s: they become fields of the run configuration, CLI options and grid keys, and its label
(`gsl α=1 k=8 select=aligned`) names its runs in bench's output and the report.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from gslbench.lazy import lazy_import
from gslbench.quantizers import Quantizer
from gslbench.quantizers.base import Assignment
from gslbench.settings import Setting

torch = lazy_import("torch")


class Method:
    """A training strategy over a (b, d) float32 representation z and a quantizer.

    Class attributes: `name` (registry key), `knobs` (its own settings), `quantized` (False only
    for the float ceiling: no quantizer at all), `trains_against_codebooks` (True: the codebooks
    are refitted during training and the method uses them; False: fitted once, after training),
    `plain_warmup` (True: until the first codebook fit the method trains exactly as float, z
    itself to the similarity loss, no penalty, no random draws of its own, so it starts from the
    state a float run or another method saved after the warm-up, `gslbench.checkpoints`; a
    method that does otherwise must set it False), `trains` (False: no epoch at all, the run's
    network is `network`'s; `pca`), `unused_settings` (shared settings the method ignores:
    `RunConfig.resolved` resets them to their defaults, so that they do not split its runs).
    """

    name: ClassVar[str]
    knobs: ClassVar[tuple[Setting, ...]] = ()
    quantized: ClassVar[bool] = True
    trains_against_codebooks: ClassVar[bool] = True
    plain_warmup: ClassVar[bool] = True
    trains: ClassVar[bool] = True
    unused_settings: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""

    def __init__(self, config: Any, quantizer: Quantizer | None) -> None:
        """config: the run's RunConfig (the method reads its knobs from it); quantizer: the
        run's quantizer (None for float), fitted by the loop before the method uses it."""
        self.config, self.quantizer = config, quantizer
        self._assigned: tuple[weakref.ref, tuple[int, int], Assignment] | None = None

    @classmethod
    def plain(cls, settings: Mapping[str, Any]) -> bool:
        """Whether a run with the knobs of `settings` (a run's settings by name) trains exactly as
        float to its last epoch, its codebooks fitted only after training (float, two-step), so
        that it starts from float's trained network (`gslbench.checkpoints`). By default: a
        method with a plain warm-up that trains against no codebooks and keeps `representation`
        and `penalty` as they are."""
        return (cls.plain_warmup and not cls.trains_against_codebooks
                and cls.representation is Method.representation and cls.penalty is Method.penalty)

    @classmethod
    def epochs(cls, asked: int) -> int:
        """The epochs a run of this method trains of the `asked` its settings give (`epochs`):
        all of them, none for a method that trains nothing (`trains` False; its config keeps
        the default `epochs`). What the tuning page and the report count as planned."""
        return asked if cls.trains else 0

    @classmethod
    def candidates(cls, settings: Mapping[str, Any]) -> tuple[str, int] | None:
        """The knob that counts the codewords the method weighs per sub-space (or the beam width)
        and its value in `settings`, or None where the method weighs none; a run's
        configuration refuses a value above the codebook size."""
        return None

    @classmethod
    def network(cls, config: Any, features: np.ndarray) -> torch.nn.Module:
        """The fixed network of a method that does not train (`trains` False), from the run's
        config and its (n, d) float32 training features."""
        raise NotImplementedError(f"{cls.name} trains its network")

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        """The method with its knobs' values taken from `settings`: `qloss λ=0.1`, `two-step`."""
        return " ".join([cls.name, *(knob.label(settings[knob.name]) for knob in cls.knobs)])

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) -> (b, d): what the similarity loss sees; z itself by default."""
        return z

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """A scalar added to the similarity loss; 0 by default."""
        return z.new_zeros(())

    def assignment(self, z: torch.Tensor, k: int = 1) -> Assignment:
        """The quantizer's `Assignment` of the batch z (b, d) float32 with k candidates (no grad).

        Computed once per batch: a step's `representation` and `penalty`, called with the same z,
        share it. The method remembers the last batch through a weak reference and z's version
        counter, so a new tensor, or z changed in place, is assigned afresh."""
        key = (k, z._version)
        assigned = self._assigned
        if assigned is None or assigned[0]() is not z or assigned[1] != key:
            assigned = self._assigned = (weakref.ref(z), key, self.quantizer.assign(z, k))
        return assigned[2]
