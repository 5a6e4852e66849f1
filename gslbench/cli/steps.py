"""The pipeline's steps as commands: download, features (extract, import), train, encode,
evaluate."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from gslbench import curves, data
from gslbench.bench import _prepare_features
from gslbench.cli.base import (
    cli,
    codebooks_option,
    config_options,
    device_option,
    log_progress,
    metric_option,
    options,
    reuse_option,
    setting_option,
    show_progress,
    tensorboard_option,
)
from gslbench.config import (
    FEATURE_SETTINGS,
    FIELDS,
    VALIDATION_SETTINGS,
    RunConfig,
    check_feature_options,
)
from gslbench.data.features import build_features
from gslbench.data.imagelist import DEFAULT_BACKBONE
from gslbench.data.neighbours import DEFAULT_K
from gslbench.devices import resolve_device
from gslbench.encode import encode_run
from gslbench.errors import GslbenchError
from gslbench.evaluation.step import evaluate_run
from gslbench.methods import loop
from gslbench.quantizers.search import SEARCHES
from gslbench.train import train_run


@cli.command()
@click.argument("dataset")
@click.option("--url", help="Fetch from this URL instead of the registered source.")
@click.option("--from", "from_dir", type=click.Path(path_type=Path),
              help="Import files placed by hand from this folder.")
@click.pass_context
def download(ctx: click.Context, dataset: str, url: str | None, from_dir: Path | None) -> None:
    """Fetch a data set's raw files (checksums verified).

    Example: gslbench download digits
    """
    path = data.download(dataset, ctx.obj["data_dir"], url=url, from_dir=from_dir)
    click.echo(path)


class FeaturesGroup(click.Group):
    """`gslbench features DATASET ...` is `gslbench features extract DATASET ...`; `import` is
    the other subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["extract", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=FeaturesGroup)
def features() -> None:
    """Write a data set's feature file: extract it, or import your own features.

    `gslbench features DATASET` is `gslbench features extract DATASET`; `gslbench features import
    NAME --from FILE` imports your own.

    Example: gslbench features digits
    """


@features.command()
@click.argument("dataset")
@click.option("--backbone", help="Feature extractor (default: the data set's own).")
@options(FEATURE_SETTINGS)
@options(VALIDATION_SETTINGS)
@device_option
@click.pass_context
def extract(ctx: click.Context, dataset: str, backbone: str | None, image_size: int,
            batch_size: int, split_seed: int, neighbours: int, validation_queries: float,
            validation_database: float, device: str) -> None:
    """Split a data set by its protocol and write its feature file (the default subcommand).

    Example: gslbench features digits
    """
    check_feature_options(image_size=image_size, batch_size=batch_size, split_seed=split_seed,
                          neighbours=neighbours, validation_queries=validation_queries,
                          validation_database=validation_database)
    path = build_features(dataset, ctx.obj["data_dir"], backbone=backbone, image_size=image_size,
                          batch_size=batch_size, split_seed=split_seed,
                          device=resolve_device(device), neighbours=neighbours or None,
                          validation=data.Validation(validation_queries, validation_database))
    click.echo(path)


# the options of one source of `features import` only (by parameter name)
SOURCE_OPTIONS = {
    "source": ("labels_path", "split_path", "features_key", "labels_key", "split_key",
               "query_per_class", "train_per_class", "train_in_database", "n_classes"),
    "ann_benchmarks": ("neighbours", "train_size"),
    "image_list": ("image_root", "train_list", "test_list", "database_list", "backbone",
                   "image_size", "batch_size", "device"),
}
IMAGE_SETTINGS = tuple(s for s in FEATURE_SETTINGS if s.name in ("image_size", "batch_size"))


@features.command("import")
@click.argument("name")
@click.option("--from", "source", type=click.Path(path_type=Path),
              help="Your features: .npz, .npy, .h5/.hdf5 or MATLAB .mat (v5 to v7.3).")
@click.option("--ann-benchmarks", type=click.Path(path_type=Path),
              help="An ann-benchmarks .hdf5 file (train, test, neighbors, distances; distance "
                   "euclidean or angular).")
@click.option("--image-list", type=click.Path(path_type=Path),
              help="A folder of DeepHash-pytorch lists train.txt, test.txt, database.txt.")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path),
              help="With a .npy --from: the labels' .npy file.")
@click.option("--split", "split_path", type=click.Path(path_type=Path),
              help="With a .npy --from: the split's .npy file.")
@click.option("--feature", help="The feature's name [imported; with --image-list the backbone's, "
                                "suffixed -SIZE for a non-default --image-size].")
@click.option("--features-key", default="features", show_default=True,
              help="Key (or variable) of the (n, d) features in --from.")
@click.option("--labels-key", default="labels", show_default=True,
              help="Key of the labels in --from: (n,) class ids or (n, C) multi-hot.")
@click.option("--split-key", default="split", show_default=True,
              help="Per item: 0 database, 1 query, 2 train, 3 train and database.")
@click.option("--query-per-class", type=click.IntRange(min=1),
              help="Queries drawn per class when the file has no split [100].")
@click.option("--train-per-class", type=click.IntRange(min=1),
              help="Training items drawn per class when the file has no split [500].")
@click.option("--train-in-database", is_flag=True,
              help="Drawn training items stay in the database.")
@click.option("--classes", "n_classes", type=click.IntRange(min=1),
              help="Number of classes of class-id labels (default: the largest id + 1).")
@click.option("--neighbours", default=DEFAULT_K, show_default=True, type=click.IntRange(min=1),
              help="--ann-benchmarks: a query's relevant items, its k first listed neighbours.")
@click.option("--train-size", type=click.IntRange(min=2),
              help="--ann-benchmarks: the training sample of train rows [min(100000, n/2)].")
@click.option("--image-root", type=click.Path(path_type=Path),
              help="--image-list: the folder the listed paths are relative to [the lists'].")
@click.option("--train-list", type=click.Path(path_type=Path),
              help="--image-list: the training list [DIR/train.txt].")
@click.option("--test-list", type=click.Path(path_type=Path),
              help="--image-list: the query list [DIR/test.txt].")
@click.option("--database-list", type=click.Path(path_type=Path),
              help="--image-list: the database list [DIR/database.txt].")
@click.option("--backbone", help=f"--image-list: the feature extractor [{DEFAULT_BACKBONE}].")
@options(IMAGE_SETTINGS)
@device_option
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the drawn parts: the validation split, --from's split when the file "
                   "has none, --ann-benchmarks' training sample.")
@click.option("--map-at", "map_top", type=click.IntRange(min=1),
              help="Score mAP@K [--ann-benchmarks: 100; else mAP over the whole database].")
@options(VALIDATION_SETTINGS)
@click.pass_context
def import_(ctx: click.Context, name: str, **given: Any) -> None:
    """Import a data set as NAME from one of three sources.

    \b
    --from FILE: your features (n, d), labels ((n,) class ids or (n, C)
      multi-hot) and optionally a split (n,) of part codes.
    --ann-benchmarks FILE.hdf5: datasets train (n, d), test (q, d),
      neighbors (q, K) and distances (q, K), attribute distance euclidean
      or angular (vectors L2-normalised); the queries are test, the
      database every train row, relevance the first --neighbours listed
      (checked on 100 queries against an exact search); training and
      validation are drawn from train.
    --image-list DIR: train.txt, test.txt, database.txt, one image a line,
      `relative/path.jpg 0 1 0 ...` (its path under --image-root, its
      multi-hot labels); features by --backbone; the three sets kept as
      given, the validation split drawn from the database items that are
      no training items.

    \b
    Examples: gslbench features import cifar-vgg --from cifar10_vgg.mat --map-at 1000
              gslbench features import sift --ann-benchmarks sift-128-euclidean.hdf5
              gslbench features import nus --image-list lists/ --image-root images/
    """
    chosen = _import_source(ctx, given)
    check_feature_options(**{key: given[key] for key in ("validation_queries",
                                                         "validation_database")})
    common = {"validation": data.Validation(given["validation_queries"],
                                            given["validation_database"])}
    if chosen == "source":
        source = data.ImportSource(*(given[key] for key in (
            "source", "labels_path", "split_path", "features_key", "labels_key", "split_key")))
        common.update(feature=given["feature"] or "imported", n_classes=given["n_classes"],
                      protocol=data.ImportProtocol(*(given[key] for key in (
                          "query_per_class", "train_per_class", "train_in_database", "map_top",
                          "split_seed"))))
    elif chosen == "ann_benchmarks":
        source = data.AnnBenchmarksSource(given["ann_benchmarks"], given["train_size"],
                                          given["neighbours"])
        common.update(feature=given["feature"] or "imported", split_seed=given["split_seed"],
                      map_top=given["map_top"] or 100)
    else:
        check_feature_options(image_size=given["image_size"], batch_size=given["batch_size"])
        source = data.ImageListSource.in_folder(
            given["image_list"], given["image_root"], train=given["train_list"],
            test=given["test_list"], database=given["database_list"], backbone=given["backbone"],
            image_size=given["image_size"], batch_size=given["batch_size"])
        common.update(feature=given["feature"], split_seed=given["split_seed"],
                      map_top=given["map_top"], device=resolve_device(given["device"]))
    click.echo(data.import_features(name, source, ctx.obj["data_dir"], **common))


def _import_source(ctx: click.Context, given: dict[str, Any]) -> str:
    """Which source `features import` reads (`SOURCE_OPTIONS`); none, several, or an option of
    another source given on the command line is a one-line error."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}
    named = [key for key in SOURCE_OPTIONS if given[key] is not None]
    if len(named) != 1:
        raise GslbenchError("features import: give one of --from FILE, --ann-benchmarks "
                            "FILE.hdf5 and --image-list DIR")
    for key, names in SOURCE_OPTIONS.items():
        for option in names if key != named[0] else ():
            if ctx.get_parameter_source(option) == click.core.ParameterSource.COMMANDLINE:
                raise GslbenchError(f"{flags[option]}: goes with {flags[key]}, not with "
                                    f"{flags[named[0]]}")
    return named[0]


@cli.command()
@click.option("-d", "--dataset", default=FIELDS["dataset"].default, show_default=True,
              help="Data set: a registered one or one imported with `features import`.")
@click.option("--feature", help=FIELDS["feature"].help)
@setting_option(FIELDS["method"])
@setting_option(FIELDS["quantizer"])
@setting_option(FIELDS["bits"])
@setting_option(FIELDS["seed"])
@config_options
@device_option
@reuse_option
@tensorboard_option
@click.pass_context
def train(ctx: click.Context, dataset: str, feature: str | None, force: bool, device: str,
          reuse: bool, tensorboard: Path | None, **options: Any) -> None:
    """Train one run and print its run directory.

    When the data set's default feature file is missing it is downloaded and extracted first, as
    `gslbench bench` and the API's `train()` do. On a terminal a progress bar shows the epochs;
    elsewhere (a log file, a job) each codebook refit is logged as a line (epoch, similarity
    loss, quantization error).

    Example: gslbench train -d digits --method gsl --quantizer pq --bits 32 --seed 0
    """
    feature = feature or data.get_dataset(dataset, ctx.obj["data_dir"]).default_feature
    config = RunConfig(dataset=dataset, feature=feature, **options)
    if tensorboard is not None:
        curves.check_writer()
    _prepare_features([config], ctx.obj["data_dir"], device)
    if log_progress(ctx):  # no bar: the loop's line per refit instead
        logging.getLogger(loop.__name__).setLevel(logging.DEBUG)
    run = train_run(config, ctx.obj["data_dir"], ctx.obj["results_dir"], force=force,
                    show_progress=show_progress(ctx), device=device, reuse=reuse)
    if tensorboard is not None:
        curves.write_curves(run, tensorboard)
    click.echo(run.path)


@cli.command()
@click.argument("run")
@click.option("--force", is_flag=True, help="Re-encode even if the codes file exists.")
@codebooks_option
@device_option
@click.pass_context
def encode(ctx: click.Context, run: str, force: bool, codebooks: str, device: str) -> None:
    """Encode a run's database and queries into RUN/codes.h5 (RUN/codes-database.h5 with
    --codebooks database: codebooks fitted again on the database, from scratch, with the run's
    seed).

    Example: gslbench encode results/runs/0123456789ab --codebooks database
    """
    click.echo(encode_run(run, ctx.obj["data_dir"], ctx.obj["results_dir"], force=force,
                          device=device, codebooks=codebooks))


@cli.command()
@click.argument("run")
@click.option("--force", is_flag=True, help="Re-evaluate even if the metrics file exists.")
@click.option("--map-at", "map_at", multiple=True, type=int,
              help="Cut-offs K of mAP@K (repeatable; default: the data set's).")
@click.option("--search", type=click.Choice(SEARCHES), default="adc", show_default=True,
              help="adc: float queries against the codes; sdc: the queries quantized too.")
@metric_option
@codebooks_option
@click.pass_context
def evaluate(ctx: click.Context, run: str, force: bool, map_at: tuple[int, ...], search: str,
             metric: str, codebooks: str) -> None:
    """Score the run's codes by searching them: prints mAP, mAP@K and the quantization error.

    Writes RUN/metrics.json (adc, l2) or RUN/metrics-SEARCH-METRIC.json (metrics-database*.json
    with --codebooks database), reading only the codes file; prints the headline numbers, then
    the file's path.

    Example: gslbench evaluate 0123456789ab --search sdc --metric ip
    """
    path = evaluate_run(run, ctx.obj["results_dir"], force=force, map_at=map_at or None,
                        search=search, metric=metric, codebooks=codebooks)
    click.echo(headline(json.loads(Path(path).read_text())))
    click.echo(path)


def headline(metrics: dict[str, Any]) -> str:
    """One line of a metrics record: `RUN LABEL: mAP 0.5123, mAP@100 0.6034, database
    quantization error 0.0123` (the protocol's mAP@K first when it fixes one; a float run has
    no quantization error)."""
    map_at = metrics["map_at"]
    first = [str(metrics["map_top"])] if str(metrics.get("map_top")) in map_at else []
    order = first + sorted((k for k in map_at if k not in first), key=int)
    whole = [f"mAP {metrics['map']:.4f}"] if metrics["map"] is not None else []  # None: top only
    parts = [*whole, *(f"mAP@{k} {map_at[k]:.4f}" for k in order),
             *(f"1-recall@{r} {v:.4f}" for r, v in metrics.get("one_recall_at", {}).items())]
    error = (metrics.get("quant_mse") or {}).get("database")
    if error is not None and metrics["config"].get("method") != "float":
        parts.append(f"database quantization error {error:.4g}")
    return f"{metrics['run']} {metrics['label']}: " + ", ".join(parts)


