"""``leukoedge train`` and ``leukoedge evaluate``: thin click wrappers over run.py and evaluate.py.

TensorFlow is imported only when a command runs, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from typing import Any

import click

from leukoedge.train.augment import AugmentConfig
from leukoedge.train.datasets import LAYOUTS
from leukoedge.train.labels import TASKS
from leukoedge.train.model import ARCHITECTURES
from leukoedge.train.splits import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION

_MAPPING_HELP = (
    "How source class names map to malignant / non_malignant, e.g. 'MYO,MOB' (these TCIA codes malignant, "
    "the rest not), 'malignant=blast;non_malignant=normal;ignore=KSC'. Default: TCIA codes with "
    "MYO and MOB malignant, and known folder names (blast, normal, lymphocyte, ...). With --task "
    "differential: overrides of the default TCIA code -> cell type mapping, e.g. "
    "'blast=MYO,MOB,PMO;ignore=KSC', or a .toml/.json file of cell type = [names]."
)


@contextlib.contextmanager
def _progressbar(length: int, label: str) -> Iterator[Any]:
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar


def _echo(line: str) -> None:
    click.echo(line, err=True)


def _augment(enabled: bool, preset: str, task: str) -> AugmentConfig:
    if not enabled:
        return AugmentConfig(enabled=False)
    robust = preset == "robust" or (preset == "auto" and task == "differential")
    return AugmentConfig.robust() if robust else AugmentConfig()


@click.command("train")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True),
    help="Labelled images: class folders (optionally under train/val/test folders), "
    "a TCIA-style folder, or a CSV manifest.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Run directory to write (model, splits, metrics, plots, report). Keep it outside the source tree.",
)
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="auto",
    show_default=True,
    help="How labels are stored; 'auto' detects it.",
)
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default="binary",
    show_default=True,
    help="'differential': a softmax LeukoNet over every white-cell type (blast, neutrophil, lymphocyte, "
    "...), p_blast the sum over blast types; 'binary': the sigmoid blast-or-not LeukoNet.",
)
@click.option("--mapping", default=None, help=_MAPPING_HELP)
@click.option(
    "--epochs",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Most epochs to train (early stopping may end sooner).",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Adam learning rate.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the split, the weights, the shuffling and the augmentation.",
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Flips, 90-degree rotations and stain-colour jitter on training images.",
)
@click.option(
    "--augment-preset",
    type=click.Choice(["auto", "basic", "robust"]),
    default="auto",
    show_default=True,
    help="'basic': flips, rotations, colour jitter; 'robust': also stain strength in optical density, "
    "blur, noise, JPEG and scale (for microscopes never seen); 'auto': robust for the differential task.",
)
@click.option(
    "--architecture",
    type=click.Choice(ARCHITECTURES),
    default="leukonet",
    show_default=True,
    help="'leukonet' is the model the edge bundle expects.",
)
@click.option(
    "--dropout",
    type=click.FloatRange(0.0, 0.95),
    default=0.5,
    show_default=True,
    help="Dropout rate before the output layer.",
)
@click.option(
    "--weight-decay",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="L2 penalty on every kernel.",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0.0, 0.5),
    default=0.0,
    show_default=True,
    help="Label smoothing of the differential's cross-entropy.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.01, 0.9),
    default=DEFAULT_VAL_FRACTION,
    show_default=True,
    help="Share of the training images held out for early stopping and the threshold.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0.0, 0.9),
    default=DEFAULT_TEST_FRACTION,
    show_default=True,
    help="Share held out for the reported figures (only when the data has no val/test folder).",
)
@click.option(
    "--patience",
    type=click.IntRange(0, 1000),
    default=4,
    show_default=True,
    help="Stop after this many epochs without a better validation AUC (0: never).",
)
@click.option(
    "--target-sensitivity",
    type=click.FloatRange(0.5, 1.0),
    default=0.95,
    show_default=True,
    help="Sensitivity the second threshold guarantees on the validation split.",
)
@click.option(
    "--operating",
    type=click.Choice(["youden", "sensitivity"]),
    default="youden",
    show_default=True,
    help="Which validation-chosen threshold the model bundle uses.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=2),
    default=None,
    help="Use a stratified subset of about N images (quick runs).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where decoded 64x64 crops are cached (default: $LEUKOEDGE_CACHE or ~/.cache/leukoedge).",
)
@click.option(
    "--overwrite", is_flag=True, help="Allow writing into a run directory that already holds a model."
)
def train_cmd(**kw: Any) -> None:
    """Train LeukoNet on labelled single-cell images and write a run directory.

    The data is split into train / validation / test (provided split folders are kept; for the
    aml-lmu layout the 'val' folder becomes the held-out test split). The checkpoint with the best
    validation ROC-AUC is kept, the decision threshold is chosen on validation, and the test split
    is scored once with it. Outputs: model.keras, splits.json, history.csv, metrics.json, run.json,
    plots, report.md and report.html.
    """
    from leukoedge.train.run import TrainOptions, train_run
    from leukoedge.train.trainer import FitConfig

    fit = FitConfig(
        epochs=kw["epochs"],
        batch_size=kw["batch_size"],
        learning_rate=kw["learning_rate"],
        seed=kw["seed"],
        architecture=kw["architecture"],
        patience=kw["patience"],
        augment=_augment(kw["augment"], kw["augment_preset"], kw["task"]),
        dropout=kw["dropout"],
        l2=kw["weight_decay"],
        label_smoothing=kw["label_smoothing"],
    )
    options = TrainOptions(
        data=kw["data"],
        out=kw["out"],
        layout=kw["layout"],
        mapping=kw["mapping"],
        fit=fit,
        val_fraction=kw["val_fraction"],
        test_fraction=kw["test_fraction"],
        cache_dir=kw["cache_dir"],
        limit=kw["limit"],
        target_sensitivity=kw["target_sensitivity"],
        operating=kw["operating"],
        overwrite=kw["overwrite"],
        task=kw["task"],
        command="leukoedge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "",
    )
    result = train_run(options, echo=_echo, progress=_progressbar)
    test = result.metrics.get("test")
    op = result.metrics["operating_threshold"]
    click.echo(f"threshold {op['value']:.4f} ({op['rule']}, chosen on validation)")
    if test:
        ci = test["ci95"]
        for key in ("roc_auc", "sensitivity", "specificity"):
            click.echo(f"test {key:12s} {test[key]:.4f}  (95 % CI {ci[key][0]:.4f} - {ci[key][1]:.4f})")
        if "differential" in test:
            from leukoedge.train.differential import type_table

            click.echo(
                f"test balanced accuracy of the differential {test['differential']['balanced_accuracy']:.4f}"
            )
            for row in type_table(test)[1]:
                click.echo("  " + "  ".join(row))
    click.echo(f"report: {result.run_dir / 'report.html'}")


@click.command("evaluate")
@click.option(
    "--model",
    "model",
    required=True,
    type=click.Path(exists=True),
    help="A training run directory or a model.keras file.",
)
@click.option(
    "--data",
    default=None,
    type=click.Path(exists=True),
    help="Labelled images; default: the run's own data. On the run's data the split manifest "
    "picks the held-out images.",
)
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True)
@click.option(
    "--mapping",
    default=None,
    help=_MAPPING_HELP + " For a set of normal cells in other folders: 'non_malignant=folder1,folder2'.",
)
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train", "all"]),
    default=None,
    help="Which images: default 'test' on the run's own data (from its split manifest), 'all' on other data.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Decision threshold on p(malignant); default: the run's operating threshold.",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Also write metrics.json, plots and a report here.",
)
@click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None, help="Decoded-image cache folder."
)
def evaluate_cmd(**kw: Any) -> None:
    """Evaluate a trained Keras model on labelled images.

    With both classes: sensitivity, specificity, precision, F1 per class, balanced accuracy,
    ROC-AUC and PR-AUC with bootstrap 95 % intervals, and the confusion matrix. On a set with one
    class only (e.g. normal cells from another scanner) only the share of correct calls is defined:
    it reports specificity per source class with Wilson intervals and says why nothing else is.
    """
    from leukoedge.train.evaluate import EvalRequest, evaluate
    from leukoedge.train.report_eval import summary_lines

    req = EvalRequest(**kw)
    result = evaluate(req, progress=_progressbar)
    for line in summary_lines(result):
        click.echo(line)
    if kw["out"]:
        click.echo(f"report: {kw['out']}/report.html")


@click.command("prepare-lmu")
@click.option(
    "--aml-lmu", required=True, type=click.Path(exists=True, file_okay=False), help="The aml-lmu folder."
)
@click.option(
    "--thumbs", required=True, type=click.Path(exists=True, file_okay=False), help="The lmu-thumbs folder."
)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="CSV manifest to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split.")
def prepare_lmu_cmd(aml_lmu: str, thumbs: str, out: str, seed: int) -> None:
    """Write aml-lmu and lmu-thumbs as one CSV manifest (path, label, group, split) for training.

    aml-lmu's val folder is the test split; thumbnails are grouped into near-duplicate runs (rotated
    and zoomed copies of one cell stay together) and split 55/20/25 % by group; MYO and NGS
    thumbnails, which may repeat aml-lmu cells, are left out. Train on it with
    ``leukoedge train --task differential --data OUT``.
    """
    from collections import Counter

    from leukoedge.train.neardup import lmu_differential_rows, write_manifest

    rows = lmu_differential_rows(aml_lmu, thumbs, seed=seed)
    path = write_manifest(rows, out)
    counts = Counter((r["label"], r["split"]) for r in rows)
    for code in sorted({r["label"] for r in rows}):
        groups = len({r["group"] for r in rows if r["label"] == code})
        split = ", ".join(f"{s} {counts[(code, s)]}" for s in ("train", "val", "test"))
        click.echo(f"{code}: {groups} groups; {split}", err=True)
    click.echo(str(path))
