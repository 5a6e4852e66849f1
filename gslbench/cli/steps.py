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
from gslbench.devices import resolve_device
from gslbench.encode import encode_run
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


@features.command("import")
@click.argument("name")
@click.option("--from", "source", required=True, type=click.Path(path_type=Path),
              help="The features: .npz, .npy, .h5/.hdf5 or MATLAB .mat (v5 to v7.3).")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path),
              help="With a .npy --from: the labels' .npy file.")
@click.option("--split", "split_path", type=click.Path(path_type=Path),
              help="With a .npy --from: the split's .npy file.")
@click.option("--feature", default="imported", show_default=True, help="The feature's name.")
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
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the drawn split when the file has none.")
@click.option("--map-at", "map_top", type=click.IntRange(min=1),
              help="Score mAP@K (default: mAP over the whole database).")
@click.option("--classes", "n_classes", type=click.IntRange(min=1),
              help="Number of classes of class-id labels (default: the largest id + 1).")
@options(VALIDATION_SETTINGS)
@click.pass_context
def import_(ctx: click.Context, name: str, source: Path, labels_path: Path | None,
            split_path: Path | None, feature: str, features_key: str, labels_key: str,
            split_key: str, query_per_class: int | None, train_per_class: int | None,
            train_in_database: bool, split_seed: int, map_top: int | None,
            n_classes: int | None, validation_queries: float, validation_database: float) -> None:
    """Import your own features, labels and split as data set NAME.

    Example: gslbench features import cifar-vgg --from cifar10_vgg.mat --map-at 1000
    """
    arrays = data.ImportSource(source, labels_path, split_path, features_key, labels_key,
                               split_key)
    protocol = data.ImportProtocol(query_per_class, train_per_class, train_in_database, map_top,
                                   split_seed)
    check_feature_options(validation_queries=validation_queries,
                          validation_database=validation_database)
    click.echo(data.import_features(name, arrays, ctx.obj["data_dir"], protocol=protocol,
                                    feature=feature, n_classes=n_classes,
                                    validation=data.Validation(validation_queries,
                                                               validation_database)))


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


