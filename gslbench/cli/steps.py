"""The pipeline's steps as commands: download, features (extract, import), train, encode,
evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gslbench import data
from gslbench.cli.base import (
    cli,
    config_options,
    device_option,
    metric_option,
    options,
    setting_option,
    show_progress,
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
    """Write a data set's feature file: extract it (`gslbench features DATASET`, the same as
    `gslbench features extract DATASET`) or import your own (`gslbench features import NAME
    --from FILE`).

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
            batch_size: int, split_seed: int, validation_queries: float,
            validation_database: float, device: str) -> None:
    """Split a data set by its protocol and write its feature file (the default subcommand).

    Example: gslbench features digits
    """
    check_feature_options(image_size=image_size, batch_size=batch_size, split_seed=split_seed,
                          validation_queries=validation_queries,
                          validation_database=validation_database)
    path = build_features(dataset, ctx.obj["data_dir"], backbone=backbone, image_size=image_size,
                          batch_size=batch_size, split_seed=split_seed,
                          device=resolve_device(device),
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
@click.option("--features-key", default="features", show_default=True)
@click.option("--labels-key", default="labels", show_default=True)
@click.option("--split-key", default="split", show_default=True,
              help="Per item: 0 database, 1 query, 2 train, 3 train and database.")
@click.option("--query-per-class", type=click.IntRange(min=1),
              help="Queries drawn per class when the file has no split [100].")
@click.option("--train-per-class", type=click.IntRange(min=1),
              help="Training items drawn per class when the file has no split [500].")
@click.option("--train-in-database", is_flag=True,
              help="Drawn training items stay in the database.")
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(min=0))
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
@click.option("-d", "--dataset", default=FIELDS["dataset"].default, show_default=True)
@click.option("--feature", help=FIELDS["feature"].help)
@setting_option(FIELDS["method"])
@setting_option(FIELDS["quantizer"])
@setting_option(FIELDS["bits"])
@setting_option(FIELDS["seed"])
@config_options
@device_option
@click.pass_context
def train(ctx: click.Context, dataset: str, feature: str | None, force: bool, device: str,
          **options: Any) -> None:
    """Train one run; prints its run directory.

    Example: gslbench train -d digits --method gsl --quantizer pq --bits 32 --seed 0
    """
    feature = feature or data.get_dataset(dataset, ctx.obj["data_dir"]).default_feature
    config = RunConfig(dataset=dataset, feature=feature, **options)
    run = train_run(config, ctx.obj["data_dir"], ctx.obj["results_dir"], force=force,
                    show_progress=show_progress(ctx), device=device)
    click.echo(run.path)


@cli.command()
@click.argument("run")
@click.option("--force", is_flag=True, help="Re-encode even if codes.h5 exists.")
@device_option
@click.pass_context
def encode(ctx: click.Context, run: str, force: bool, device: str) -> None:
    """Encode a run's database into RUN/codes.h5.

    Example: gslbench encode results/runs/0123456789ab
    """
    click.echo(encode_run(run, ctx.obj["data_dir"], ctx.obj["results_dir"], force=force,
                          device=device))


@cli.command()
@click.argument("run")
@click.option("--force", is_flag=True, help="Re-evaluate even if the metrics file exists.")
@click.option("--map-at", "map_at", multiple=True, type=int,
              help="Cut-offs K of mAP@K (repeatable; default: the data set's).")
@click.option("--search", type=click.Choice(SEARCHES), default="adc", show_default=True,
              help="adc: float queries against the codes; sdc: the queries quantized too.")
@metric_option
@click.pass_context
def evaluate(ctx: click.Context, run: str, force: bool, map_at: tuple[int, ...], search: str,
             metric: str) -> None:
    """Search the run's codes and write RUN/metrics.json (adc, l2) or
    RUN/metrics-SEARCH-METRIC.json (reads only RUN/codes.h5).

    Example: gslbench evaluate 0123456789ab --search sdc --metric ip
    """
    path = evaluate_run(run, ctx.obj["results_dir"], force=force, map_at=map_at or None,
                        search=search, metric=metric)
    click.echo(path)


