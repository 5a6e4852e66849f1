"""What a training method is: a name, its own knobs, a label, and how it trains.

Every method shares the network, the similarity loss, the optimizer, the schedule and the
quantizer (`gslbench.methods.loop`); a method only says how the representation z reaches the
similarity loss (`representation`) and what is added to that loss (`penalty`). Its knobs are
`Setting`s: they become fields of the run configuration, CLI options and grid keys, and its label
(`gsl α=1 k=8`) names its runs in bench's output and the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from gslbench.quantizers import Quantizer
from gslbench.settings import Setting


class Method:
    """A training strategy over a (b, d) float32 representation z and a quantizer.

    Class attributes: `name` (registry key), `knobs` (its own settings), `quantized` (False only
    for the float ceiling: no quantizer at all), `trains_against_codebooks` (True: the codebooks
    are refitted during training and the method uses them; False: fitted once, after training).
    """

    name: ClassVar[str]
    knobs: ClassVar[tuple[Setting, ...]] = ()
    quantized: ClassVar[bool] = True
    trains_against_codebooks: ClassVar[bool] = True
    summary: ClassVar[str] = ""

    def __init__(self, config: Any, quantizer: Quantizer | None) -> None:
        """config: the run's RunConfig (the method reads its knobs from it); quantizer: the
        run's quantizer (None for float), fitted by the loop before the method uses it."""
        self.config, self.quantizer = config, quantizer

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
