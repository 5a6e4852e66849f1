"""The resolved configuration of one run and the short hash that names its directory.

`RunConfig` is a frozen dataclass whose fields are `SETTINGS` (shared by every method) and the
knobs of every registered method (`gslbench.methods.METHODS`), each a `Setting` that carries its
type, default, range and help. Every value is checked here, in one place, whether it comes from
the CLI, a grid file or a config.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gslbench import data, methods
from gslbench.data.featurefile import PROTOCOLS, RUN_SPLITS
from gslbench.data.unseen import DEFAULT_UNSEEN, MIN_CLASSES
from gslbench.errors import GslbenchError, did_you_mean
from gslbench.methods import METHODS, Method
from gslbench.plugins import register_plugins
from gslbench.quantizers import QUANTIZERS, registry
from gslbench.settings import Setting
from gslbench.storage import config_id

# the plugins' methods (their knobs), quantizers and data sets, before SETTINGS
register_plugins((("gslbench.methods", METHODS, methods.plugin_problem),
                  ("gslbench.quantizers", QUANTIZERS, registry.plugin_problem),
                  ("gslbench.datasets", data.DATASETS, data.plugin_problem)))

LOSSES = ("pairwise", "contrastive", "triplet", "softmax")
MARGIN_LOSSES = ("contrastive", "triplet")

MAX_SEED = 2**32 - 1  # numpy's and faiss's seeds are 32-bit
SETTINGS: tuple[Setting, ...] = (
    Setting("dataset", str, "digits", "Data set."),
    Setting("feature", str, "pixels", "Feature file name (default: the data set's own)."),
    Setting("method", str, "gsl", "Training method.", choices=tuple(METHODS)),
    Setting("quantizer", str, "pq", "Vector quantizer.", choices=tuple(QUANTIZERS)),
    Setting("bits", int, 32, "Code length in bits.", low=1, high=4096),
    Setting("sub_bits", int, 8, "Bits per codebook.", low=1, high=16),
    Setting("loss", str, "pairwise", "Similarity loss.", choices=LOSSES),
    Setting("dim_out", int, 64, "Dimension of the learned representation.", low=1, high=4096),
    Setting("hidden", int, 256, "Width of the hidden layer.", low=1, high=16384),
    # 16: EfficientNet-Lite0's blocks (gslbench.data.backbones checks the network's own count)
    Setting("train_blocks", int, 0, "Fine-tune the CNN's last N blocks and head convolution "
            "with the MLP head (0: the MLP head on frozen features).", low=0, high=16),
    Setting("epochs", int, 40, "Training epochs.", low=1, high=10000),
    Setting("warmup_epochs", int, 5, "Plain epochs before the first codebook fit.", low=0,
            high=10000),
    Setting("epochs_per_refit", int, 5, "Network epochs between codebook refits.", low=1,
            high=10000),
    Setting("batch_size", int, 128, "Training batch size.", low=2, high=65536),
    Setting("lr", float, 1e-3, "Adam's learning rate.", low=0.0, high=1.0, low_open=True),
    Setting("weight_decay", float, 1e-5, "Adam's weight decay.", low=0.0, high=1.0),
    # representations are L2-normalised: distances lie in [0, 2]
    Setting("margin", float, 0.5, "Margin of the contrastive and triplet losses.", low=0.0,
            high=2.0, low_open=True),
    Setting("seed", int, 0, "Seed of the initialisation, batches and codebooks.", low=0,
            high=MAX_SEED),
    Setting("split", str, "test", "What the run is scored on: test (the protocol's queries and "
            "database) or validation (tuning: the validation queries and database, items no run "
            "trains on); both train on the same training items.", choices=RUN_SPLITS),
    Setting("protocol", str, "standard", "Which classes a run trains on: standard (every class) "
            "or unseen (--unseen classes held out of training by the seeded --draw; queries and "
            "database of every class, scored as seen@seen, seen@all, unseen@unseen and "
            "unseen@all).", choices=PROTOCOLS, recorded_at_default=False),
    Setting("unseen", int, DEFAULT_UNSEEN, "How many classes the unseen protocol holds out of "
            "training (at least 2, and at least 2 left seen).", low=MIN_CLASSES, high=4096,
            recorded_at_default=False),
    Setting("draw", int, 0, "Which seeded draw of the unseen protocol's held-out classes (with "
            "the feature file's split seed).", low=0, high=MAX_SEED, recorded_at_default=False),
)
UNSEEN_FIELDS = ("unseen", "draw")  # reset to their defaults for standard-protocol runs
# The options of `gslbench features` (the features step), checked the same way.
FEATURE_SETTINGS: tuple[Setting, ...] = (
    Setting("image_size", int, 64, "Resize images to this side (CNN backbones).", low=16,
            high=1024),
    Setting("batch_size", int, 256, "Images per batch of the feature extractor.", low=1,
            high=65536),
    Setting("split_seed", int, 0, "Seed of the query/train/database split.", low=0,
            high=MAX_SEED),
    Setting("neighbours", int, 0, "A data set without labels: the k true neighbours per item "
            "that are its relevance (0: the protocol's, 10 for glove-6b-50d); another k is the "
            "feature FEATURE-kK, a file of its own.", low=0, high=10_000),
)
# The validation split's sizes per class (`gslbench features` and `features import`), drawn
# from the items no run trains on; 0: the protocol's (`gslbench.data.base.Protocol`).
VALIDATION_SETTINGS: tuple[Setting, ...] = (
    Setting("validation_queries", int, 0, "Validation queries per class, seeded, out of the "
            "items no run trains on (tuning scores on them; 0: as many as the test queries).",
            low=0, high=10**9),
    Setting("validation_database", int, 0, "Validation database items per class, seeded, out of "
            "the items no run trains on (0: a seventh of the data set in all).", low=0,
            high=10**9),
)
KNOBS: tuple[Setting, ...] = tuple(knob for method in METHODS.values() for knob in method.knobs)
FIELDS: dict[str, Setting] = {setting.name: setting for setting in (*SETTINGS, *KNOBS)}
DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in FIELDS.items()}
QUANTIZER_FIELDS = ("quantizer", "bits", "sub_bits", "warmup_epochs", "epochs_per_refit")


class _RunConfigBase:
    """The behaviour of `RunConfig` (its fields come from `FIELDS`)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise GslbenchError(f"unknown method {self.method!r}{did_you_mean(self.method, METHODS)}"
                                f"; known: {', '.join(METHODS)}")
        for name, setting in FIELDS.items():
            if self.quantized or name not in QUANTIZER_FIELDS:  # float ignores the quantizer's
                setting.check(getattr(self, name))
        if self.quantized and self.bits % self.sub_bits:
            raise GslbenchError(
                f"--bits {self.bits} is not a multiple of --sub-bits {self.sub_bits}"
            )
        if self.quantized and self.method_spec.trains and self.warmup_epochs >= self.epochs:
            raise GslbenchError(f"--warmup-epochs must lie in [0, --epochs={self.epochs})")
        if self.quantized:  # the quantizer's own constraints (PQ: dim_out a multiple of M, ...)
            self._check_candidates(QUANTIZERS[self.quantizer].check_config(
                self.dim_out, self.bits, self.sub_bits))

    def _check_candidates(self, codebook_size: int) -> None:
        """A method weighs at most a codebook's codewords (`Method.candidates`)."""
        candidates = self.method_spec.candidates(vars(self))
        if candidates is not None and candidates[1] > codebook_size:
            option = "--" + candidates[0].replace("_", "-")
            raise GslbenchError(f"{option} {candidates[1]} exceeds the codebook size "
                                f"{codebook_size} (2^--sub-bits {self.sub_bits})")

    @property
    def method_spec(self) -> type[Method]:
        """The registered training method."""
        return METHODS[self.method]

    @property
    def quantized(self) -> bool:
        return self.method_spec.quantized

    @property
    def label(self) -> str:
        """The method with its knobs: `gsl α=1 k=8`, `qloss λ=0.1`, `float`."""
        return self.method_spec.label(vars(self))

    def resolved(self) -> RunConfig:
        """The canonical form: settings a run does not use are reset to their defaults, so that
        they do not split one run into several (float runs drop every quantizer setting)."""
        unused = {knob.name: knob.default for knob in KNOBS if knob not in self.method_spec.knobs}
        unused.update({name: DEFAULTS[name] for name in self.method_spec.unused_settings})
        if self.loss not in MARGIN_LOSSES:
            unused["margin"] = DEFAULTS["margin"]
        if self.protocol == "standard":
            unused.update({name: DEFAULTS[name] for name in UNSEEN_FIELDS})
        if not self.quantized:
            unused.update({name: DEFAULTS[name] for name in QUANTIZER_FIELDS},
                          quantizer="none", bits=0, warmup_epochs=0)
        return dataclasses.replace(self, **unused)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as config.json holds it: every shared setting and the knobs of
        the run's own method only (so adding a method leaves other runs' ids unchanged); a
        setting that is not `recorded_at_default` only when it differs from its default."""
        own = {knob.name for knob in self.method_spec.knobs}
        values = dataclasses.asdict(self.resolved())
        return {name: value for name, value in values.items()
                if (FIELDS[name] not in KNOBS or name in own)
                and (FIELDS[name].recorded_at_default or value != FIELDS[name].default)}

    @property
    def run_id(self) -> str:
        """12 hex digits of the sha256 of the resolved config's canonical JSON."""
        return config_id(self.to_dict())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """A RunConfig from config.json's `config` record (`to_dict`'s form): every shared setting
        and the method's knobs; an unknown or missing key or a bad value is a user error."""
        if not isinstance(values, Mapping):
            raise GslbenchError(f"the config is a {type(values).__name__}, not a mapping")
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise GslbenchError(f"unknown config keys: {', '.join(sorted(unknown))}")
        method = values.get("method")
        if method not in METHODS:
            raise GslbenchError(f"unknown method {method!r}{did_you_mean(str(method), METHODS)}; "
                                f"known: {', '.join(METHODS)}")
        required = {setting.name for setting in (*SETTINGS, *METHODS[method].knobs)
                    if setting.recorded_at_default}
        missing = sorted(required - set(values))
        if missing:
            raise GslbenchError(f"missing config keys: {', '.join(missing)}")
        return cls(**values)


def check_feature_options(**values: Any) -> None:
    """Check the options of the features step against `FEATURE_SETTINGS` and
    `VALIDATION_SETTINGS` (one-line errors)."""
    settings = {setting.name: setting for setting in (*FEATURE_SETTINGS, *VALIDATION_SETTINGS)}
    for name, value in values.items():
        settings[name].check(value)


def _field(setting: Setting) -> tuple[str, type, dataclasses.Field]:
    return setting.name, setting.kind, dataclasses.field(default=setting.default)


RunConfig = dataclasses.make_dataclass(
    "RunConfig", [_field(setting) for setting in FIELDS.values()], bases=(_RunConfigBase,),
    frozen=True, namespace={"__doc__": """Everything that decides a run's result; its JSON hash is the run id.

    Fields: `SETTINGS` and every method's knobs. `float` runs are not quantized: resolved, their
    quantizer is "none" and their bits 0, so one float run serves as the ceiling for every code
    length."""},
)
RunConfig.__module__ = __name__
