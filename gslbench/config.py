"""The resolved configuration of one run and the short hash that names its directory."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from gslbench.errors import GslbenchError

METHODS = ("float", "two-step", "qloss", "gsl")
LOSSES = ("pairwise", "contrastive", "triplet", "softmax")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result; its JSON hash is the run id.

    `float` runs are not quantized: their quantizer is "none" and their bits 0, so one float run
    serves as the ceiling for every code length.
    """

    dataset: str = "digits"
    feature: str = "pixels"
    method: str = "gsl"
    quantizer: str = "pq"
    bits: int = 32
    sub_bits: int = 8
    loss: str = "pairwise"
    dim_out: int = 64
    hidden: int = 256
    epochs: int = 40
    warmup_epochs: int = 5
    epochs_per_refit: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-5
    qloss_lambda: float = 0.1
    gsl_k: int = 8
    gsl_alpha: float = 1.0
    margin: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise GslbenchError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.loss not in LOSSES:
            raise GslbenchError(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if self.method != "float" and (self.bits <= 0 or self.bits % self.sub_bits):
            raise GslbenchError(
                f"--bits {self.bits} is not a positive multiple of --sub-bits {self.sub_bits}"
            )
        if not 0.0 <= self.gsl_alpha <= 1.0:
            raise GslbenchError(f"--gsl-alpha {self.gsl_alpha} is outside [0, 1]")
        if self.gsl_k < 1 or self.epochs_per_refit < 1 or self.epochs < 1:
            raise GslbenchError("--gsl-k, --epochs and --epochs-per-refit must be at least 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise GslbenchError(f"--warmup-epochs must lie in [0, --epochs={self.epochs})")

    @property
    def quantized(self) -> bool:
        return self.method != "float"

    def resolved(self) -> RunConfig:
        """The canonical form: settings a run does not use are reset to their defaults, so that
        they do not split one run into several (float runs drop every quantizer setting)."""
        unused: dict = {}
        if self.method != "qloss":
            unused.update(qloss_lambda=DEFAULTS["qloss_lambda"])
        if self.method != "gsl":
            unused.update(gsl_k=DEFAULTS["gsl_k"], gsl_alpha=DEFAULTS["gsl_alpha"])
        if self.loss not in ("contrastive", "triplet"):
            unused.update(margin=DEFAULTS["margin"])
        if not self.quantized:
            unused.update(quantizer="none", bits=0, sub_bits=8, warmup_epochs=0,
                          epochs_per_refit=DEFAULTS["epochs_per_refit"])
        return dataclasses.replace(self, **unused)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self.resolved())

    @property
    def run_id(self) -> str:
        """12 hex digits of the sha256 of the resolved config's canonical JSON."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise GslbenchError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


DEFAULTS = {field.name: field.default for field in dataclasses.fields(RunConfig)}
