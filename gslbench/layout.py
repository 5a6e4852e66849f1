"""Where things live on disk: the data folder, the results folder and a run directory.

Every file name gslbench writes or looks for is here, so that bench, the steps and the report agree
on one layout (docs/design.md, section 1) and none of them spells a name itself:

    DATA/NAME/raw/...                        raw files (`raw_dir`)
    DATA/NAME/FEATURE.h5                     the feature file (`feature_path`)
    DATA/NAME/FEATURE-kK.h5                  the same with K true neighbours per item, where K
                                             is not the protocol's (`neighbours_feature`)
    DATA/NAME/FEATURE.train-blocks-N.h5      the trunk's activations for fine-tuning the last N
                                             CNN blocks (`activations_path`)
    DATA/NAME/.FEATURE.train-blocks-N.h5.partial   the same, being computed (resumable)
    DATA/NAME/imported.json                  the record of an imported data set (`imported_path`)
    LISTS/{train,test,database}.txt          the split lists `features import --image-list LISTS`
                                             reads (`image_list`)
    RESULTS/runs/RUN/config.json             train: the resolved config and provenance
    RESULTS/runs/RUN/model.pt                train: the network's weights
    RESULTS/runs/RUN/quantizer.h5            train: the fitted quantizer (quantized methods)
    RESULTS/runs/RUN/train_log.csv           train: one row per epoch
    RESULTS/runs/RUN/codes.h5                encode: everything evaluate reads (the final
                                             codebooks fitted on the training representations)
    RESULTS/runs/RUN/metrics.json            evaluate (ADC, L2: the default), written last: the
                                             run is done
    RESULTS/runs/RUN/metrics-SEARCH-METRIC.json  evaluate --search/--metric other than adc/l2
                                             (e.g. metrics-sdc-ip.json); never a run's "done"
    RESULTS/runs/RUN/search.json             search-bench (L2; search-ip.json for --metric ip)
    RESULTS/runs/RUN/codes-database.h5       encode --codebooks database: the final codebooks
                                             fitted on the database representations; its
                                             evaluations and search-bench results beside it as
                                             metrics-database.json, metrics-database-SEARCH-
                                             METRIC.json, search-database.json,
                                             search-database-ip.json
    RESULTS/runs/RUN/archived.json           archive: the run's records alone, its artifacts
                                             (model, quantizer, codes) left behind with their
                                             sha256 (gslbench.archive)
    RESULTS/runs/.bench.lock                 held by the one bench running on this folder
    RESULTS/runs/.RUN.*                      a run directory being built or retired (never read)
    RESULTS/runs/RUN/.NAME.*.tmp             a file being written (never read)
    RESULTS/checkpoints/ID.ckpt              train: a plain training state other runs start
                                             from (`checkpoints_dir`; gslbench.checkpoints)
    RESULTS/report/                          the report
    RESULTS/tuning/runs/RUN/...              `gslbench tune`'s runs (split "validation"), as above
    RESULTS/tuning/tuned.toml                tune: the chosen knob values (`bench --tuned`)
    RESULTS/tuning/tuned.trials.csv          tune: every trial of the choices (beside --out)
    RESULTS/tuning/tuning.md                 tune: every setting tried and its validation mAP
    TENSORBOARD/RUN/events.out.tfevents.*    train/bench --tensorboard TENSORBOARD: the run's
                                             training curves (`curves_dir`, gslbench.curves)

This module imports nothing heavy: the report side uses it to find runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gslbench.errors import GslbenchError

RUNS = "runs"
# Where a run's final codebooks are fitted: on the training representations (as trained) or on
# the database representations (as an indexer would); each fit has its own codes and results.
CODEBOOKS = ("train", "database")
REPORT = "report"
LOCK = ".bench.lock"
TUNING = "tuning"
CHECKPOINTS = "checkpoints"


def raw_dir(data_dir: str | Path, dataset: str) -> Path:
    """DATA/NAME/raw: a data set's raw files."""
    return Path(data_dir) / dataset / "raw"


def feature_path(data_dir: str | Path, dataset: str, feature: str) -> Path:
    """DATA/NAME/FEATURE.h5: a data set's feature file."""
    return Path(data_dir) / dataset / f"{feature}.h5"


def neighbours_feature(feature: str, k: int) -> str:
    """FEATURE-kK: the feature of a data set related by neighbours whose feature file holds K
    true neighbours per item instead of its protocol's (`gslbench features DATASET --neighbours
    K`); its runs name it, so runs of different K never share a file."""
    return f"{feature}-k{k}"


def neighbours_base(feature: str) -> tuple[str, int | None]:
    """`neighbours_feature`'s inverse: FEATURE-kK -> (FEATURE, K); another name -> (it, None)."""
    found = re.fullmatch(r"(.+)-k([1-9]\d*)", feature)
    return (found[1], int(found[2])) if found else (feature, None)


def activations_path(data_dir: str | Path, dataset: str, feature: str, train_blocks: int) -> Path:
    """DATA/NAME/FEATURE.train-blocks-N.h5: the cached trunk activations for fine-tuning."""
    return Path(data_dir) / dataset / f"{feature}.train-blocks-{train_blocks}.h5"


def partial_path(path: Path) -> Path:
    """DIR/.NAME.partial: a file being computed under a fixed name, so that it can resume."""
    return path.with_name(f".{path.name}.partial")


def imported_path(data_dir: str | Path, dataset: str) -> Path:
    """DATA/NAME/imported.json: what `gslbench features import` registered."""
    return Path(data_dir) / dataset / "imported.json"


def image_list(folder: str | Path, part: str) -> Path:
    """LISTS/PART.txt: the split list `part` (train, test or database) of `gslbench features
    import --image-list LISTS`."""
    return Path(folder) / f"{part}.txt"


def runs_dir(results_dir: str | Path) -> Path:
    """RESULTS/runs: one directory per run."""
    return Path(results_dir) / RUNS


def checkpoints_dir(results_dir: str | Path) -> Path:
    """RESULTS/checkpoints: the training states runs start from (removable without harm)."""
    return Path(results_dir) / CHECKPOINTS


def report_dir(results_dir: str | Path) -> Path:
    """RESULTS/report: the default report folder."""
    return Path(results_dir) / REPORT


def tuning_dir(results_dir: str | Path) -> Path:
    """RESULTS/tuning: tune's results folder (its runs under runs/, like RESULTS')."""
    return Path(results_dir) / TUNING


def tuned_path(results_dir: str | Path) -> Path:
    """RESULTS/tuning/tuned.toml: tune's choices."""
    return tuning_dir(results_dir) / "tuned.toml"


def trials_csv_path(tuned: str | Path) -> Path:
    """tune's every-trial CSV beside its choices `tuned` (tuned.toml -> tuned.trials.csv)."""
    return Path(tuned).with_suffix(".trials.csv")


def tuning_table_path(results_dir: str | Path) -> Path:
    """RESULTS/tuning/tuning.md: tune's table of every setting tried."""
    return tuning_dir(results_dir) / "tuning.md"


def curves_dir(root: str | Path, run_id: str) -> Path:
    """ROOT/RUN: a run's TensorBoard event files under `--tensorboard ROOT` (`gslbench.curves`)."""
    return Path(root) / run_id


def lock_path(results_dir: str | Path) -> Path:
    """RESULTS/runs/.bench.lock."""
    return runs_dir(results_dir) / LOCK


class _RunFile:
    """A file of a run directory: `run.config` is the path RUN/config.json."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, run: RunDir, owner: type) -> Path:
        return run.path / self.name


@dataclass(frozen=True, order=True)
class RunDir:
    """A run directory and the paths of its files, step by step (see the module docstring)."""

    path: Path
    config = _RunFile("config.json")
    model = _RunFile("model.pt")
    quantizer = _RunFile("quantizer.h5")
    train_log = _RunFile("train_log.csv")
    codes = _RunFile("codes.h5")
    metrics = _RunFile("metrics.json")
    archived = _RunFile("archived.json")

    @property
    def run_id(self) -> str:
        return self.path.name

    def codes_file(self, codebooks: str = "train") -> Path:
        """The codes of one codebook fit: codes.h5 (train) or codes-database.h5."""
        return self.path / f"codes{_fit_suffix(codebooks)}.h5"

    def metrics_file(self, search: str = "adc", metric: str = "l2",
                     codebooks: str = "train") -> Path:
        """The metrics of one evaluation mode and codebook fit: metrics.json for adc/l2 and train
        codebooks, else metrics[-database][-SEARCH-METRIC].json."""
        mode = "" if (search, metric) == ("adc", "l2") else f"-{search}-{metric}"
        return self.path / f"metrics{_fit_suffix(codebooks)}{mode}.json"

    def evaluations(self) -> list[Path]:
        """The metrics files present, of every fit: metrics.json first, then the others by name."""
        others = sorted(self.path.glob("metrics-*.json"))
        return [self.metrics, *others] if self.metrics.is_file() else others

    def search_file(self, metric: str = "l2", codebooks: str = "train") -> Path:
        """search-bench's result: search.json for l2 and train codebooks, else
        search[-database][-METRIC].json."""
        return self.path / (f"search{_fit_suffix(codebooks)}"
                            f"{'' if metric == 'l2' else '-' + metric}.json")

    def search_benches(self) -> list[Path]:
        """The search-bench result files present, of every fit, search.json first."""
        return sorted(self.path.glob("search*.json"), key=lambda path: (path.name != "search.json",
                                                                          path.name))

    def results_of(self, codebooks: str) -> list[Path]:
        """The metrics and search-bench files present that were made from one fit's codes."""
        check_codebooks(codebooks)
        return [path for path in [*self.evaluations(), *self.search_benches()]
                if _fit_of(path.stem) == codebooks]

    def leftovers(self) -> list[Path]:
        """What killed steps of this run left under temporary names: `.RUN.*` beside the run
        directory and `.NAME.*.tmp` inside it."""
        return [*self.path.parent.glob(f".{self.run_id}.*"), *self.path.glob(".*.tmp")]


def check_codebooks(codebooks: str) -> str:
    """`codebooks`, checked to be one of `CODEBOOKS` (a user error naming --codebooks otherwise)."""
    if codebooks not in CODEBOOKS:
        raise GslbenchError(f"--codebooks {codebooks!r}: expected one of {', '.join(CODEBOOKS)}")
    return codebooks


def _fit_suffix(codebooks: str) -> str:
    return "" if check_codebooks(codebooks) == "train" else f"-{codebooks}"


def _fit_of(stem: str) -> str:
    """The fit a result file's name (without .json) belongs to: metrics-database-sdc-ip ->
    database, metrics-sdc-ip -> train."""
    parts = stem.split("-")
    return parts[1] if len(parts) > 1 and parts[1] in CODEBOOKS else "train"


def run_dir(results_dir: str | Path, run_id: str) -> RunDir:
    """RESULTS/runs/RUN."""
    return RunDir(runs_dir(results_dir) / run_id)


def staging_prefix(run_id: str) -> str:
    """The prefix of the temporary directories a run is built or retired under."""
    return f".{run_id}."


def resolve_run(results_dir: str | Path, run: str | Path) -> RunDir:
    """A run given as a directory path, as a run id under RESULTS/runs, or as the unique prefix
    of one (as git takes a commit's); must hold config.json. An ambiguous prefix is a user error
    that lists the runs it matches."""
    candidates = [RunDir(Path(run)), run_dir(results_dir, str(run))]
    for candidate in candidates:
        if candidate.config.is_file():
            return candidate
    name = str(run)
    matches = [found for found in list_runs(results_dir) if name and "/" not in name
               and found.run_id.startswith(name) and found.config.is_file()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = [found.run_id for found in matches[:8]] + (["..."] if len(matches) > 8 else [])
        raise GslbenchError(f"{run}: ambiguous run id prefix, {len(matches)} runs match: "
                            f"{', '.join(shown)}")
    raise GslbenchError(f"{run}: no such run directory (looked for config.json in "
                        f"{' and '.join(str(c.path) for c in candidates)}, and for a run id "
                        f"starting with it)")


def list_runs(results_dir: str | Path) -> list[RunDir]:
    """Every run directory under RESULTS/runs (temporary names excluded), sorted by id."""
    root = runs_dir(results_dir)
    return [RunDir(p) for p in sorted(root.glob("*")) if p.is_dir() and not p.name.startswith(".")]
