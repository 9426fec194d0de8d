"""The training loop: LeukoNet, Adam, binary cross-entropy, balanced class weights, best-on-val-AUC.

This module fits a model to arrays already in memory; :mod:`leukoedge.train.run` does the data
loading, the splits and the run directory around it. The checkpoint kept is the epoch with the
highest validation ROC-AUC (ties broken by the lower validation loss: once AUC reaches 1.0 the
better-separated model is the one to keep), and training stops when the validation AUC has not
improved for ``patience`` epochs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.train.augment import AugmentConfig, balanced_class_weight, make_dataset

logger = logging.getLogger(__name__)

#: Two validation AUCs closer than this count as equal (then the validation loss decides).
AUC_TIE = 1e-4


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides how the model is fitted (recorded in run.json)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    architecture: str = "leukonet"
    l2: float = 0.0
    dropout: float = 0.5
    patience: int = 4
    class_weight: bool = True
    deterministic: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: Outputs: 1 (binary sigmoid) or the number of differential cell types (softmax).
    n_classes: int = 1
    label_smoothing: float = 0.0

    @property
    def differential(self) -> bool:
        return self.n_classes > 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        d["optimizer"] = "adam"
        if self.differential:
            d["loss"] = "categorical_crossentropy"
            d["sampling"] = "class-balanced epochs" if self.class_weight else "as loaded"
            d["checkpoint_metric"] = "val_balanced_accuracy (ties: lower val_loss)"
        else:
            d["loss"] = "binary_crossentropy"
            d["checkpoint_metric"] = "val_auc (ties: lower val_loss)"
        return d


@dataclass
class FitResult:
    """The fitted model (best weights restored) and what happened on the way."""

    model: Any
    history: list[dict[str, float]]
    best_epoch: int
    best_val_auc: float
    stopped_early: bool
    class_weight: dict[int, float] | None
    seconds: float


EpochCallback = Callable[[dict[str, float], bool], None]


def set_seeds(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and TensorFlow; optionally make TF ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _best_checkpoint_callback(
    path: Path | None,
    patience: int,
    on_epoch: EpochCallback | None,
    val_score: Callable[[Any], float] | None = None,
) -> Any:
    """Keeps the best epoch by ``val_auc`` from the logs, or by ``val_score(model)`` (stored in the
    row as ``val_balanced_accuracy`` and, for the shared bookkeeping, as ``val_auc``'s rival)."""
    import keras

    class BestOnValAuc(keras.callbacks.Callback):
        """Keep (and save) the weights of the best validation-AUC epoch; stop after ``patience``."""

        def __init__(self) -> None:
            super().__init__()
            self.best_auc = -math.inf
            self.best_loss = math.inf
            self.best_epoch = 0
            self.best_weights: list[np.ndarray] | None = None
            self.wait = 0
            self.rows: list[dict[str, float]] = []
            self.stopped_early = False

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            if val_score is not None:
                row["val_balanced_accuracy"] = float(val_score(self.model))
            key = "val_auc" if val_score is None else "val_balanced_accuracy"
            auc, loss = row.get(key, math.nan), row.get("val_loss", math.inf)
            tied = abs(auc - self.best_auc) <= AUC_TIE
            better = auc > self.best_auc + AUC_TIE or (tied and loss < self.best_loss)
            if better:
                self.best_auc, self.best_loss, self.best_epoch = auc, loss, epoch + 1
                self.best_weights = self.model.get_weights()
                if path is not None:
                    self.model.save(path)
            self.wait = 0 if better else self.wait + 1
            row["best"] = float(better)
            self.rows.append(row)
            if on_epoch is not None:
                on_epoch(row, better)
            if patience and self.wait >= patience:
                self.stopped_early = True
                self.model.stop_training = True

    return BestOnValAuc()


def compile_model(model: Any, learning_rate: float, n_classes: int = 1, label_smoothing: float = 0.0) -> None:
    """Adam + binary cross-entropy with accuracy and ROC-AUC metrics (keywords: see Keras 3); for a
    differential model categorical cross-entropy (optionally label-smoothed) with accuracy."""
    import keras

    if n_classes > 1:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
        return
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )


def _inputs(
    config: FitConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> tuple[Any, Any, dict[int, float] | None, Callable[[Any], float] | None]:
    """Training and validation datasets, class weights and the validation score a fit uses.

    A binary model: 0/1 targets, balanced class weights, checkpoint on validation AUC. A
    differential model: one-hot targets, class-balanced epochs instead of weights, checkpoint on
    validation balanced accuracy.
    """
    val_score = None
    if config.differential:
        eye = np.eye(config.n_classes, dtype=np.float32)
        y_train, y_val = eye[np.asarray(y_train, int)], eye[np.asarray(y_val, int)]
        weights = None
        truth = y_val.argmax(1)

        def val_score(m: Any) -> float:
            return balanced_accuracy(truth, predict_proba(m, x_val).argmax(1))

    else:
        weights = balanced_class_weight(y_train) if config.class_weight else None
    train_ds = make_dataset(
        x_train,
        y_train,
        config.batch_size,
        augment=config.augment,
        shuffle=True,
        seed=config.seed,
        balanced=config.differential and config.class_weight,
    )
    return train_ds, make_dataset(x_val, y_val, batch_size=256), weights, val_score


def fit_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: FitConfig | None = None,
    checkpoint: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Fit LeukoNet on uint8 crops; return the model with the best validation-AUC weights.

    ``checkpoint`` is where the best model is saved (``.keras``) whenever it improves.
    ``on_epoch(row, is_best)`` receives each epoch's metrics (for progress lines).
    """
    from leukoedge.train.model import build_leukonet

    config = config or FitConfig()
    set_seeds(config.seed, config.deterministic)
    model = build_leukonet(
        architecture=config.architecture, l2=config.l2, dropout=config.dropout, n_classes=config.n_classes
    )
    compile_model(model, config.learning_rate, config.n_classes, config.label_smoothing)
    train_ds, val_ds, weights, val_score = _inputs(config, x_train, y_train, x_val, y_val)
    tracker = _best_checkpoint_callback(
        Path(checkpoint) if checkpoint else None, config.patience, on_epoch, val_score
    )
    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        class_weight=weights,
        callbacks=[tracker],
        shuffle=False,  # the dataset shuffles itself, reproducibly
        verbose=0,
    )
    seconds = time.perf_counter() - start
    if tracker.best_weights is not None:
        model.set_weights(tracker.best_weights)
    logger.info("best epoch %d (val AUC %.4f) after %.1f s", tracker.best_epoch, tracker.best_auc, seconds)
    return FitResult(
        model=model,
        history=tracker.rows,
        best_epoch=tracker.best_epoch,
        best_val_auc=float(tracker.best_auc),
        stopped_early=tracker.stopped_early,
        class_weight=weights,
        seconds=seconds,
    )


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """p(malignant) for N x 64 x 64 x 3 uint8 crops as a float64 vector (binary model), or the
    N x classes probabilities of a differential model.

    Calls the model on batches directly (``model.predict`` costs far more per call on small sets).
    """
    out = []
    for i in range(0, len(x), batch_size):
        batch = np.asarray(x[i : i + batch_size], dtype=np.float32)
        p = np.asarray(model(batch, training=False))
        out.append(p.reshape(-1) if p.shape[-1] == 1 else p)
    if not out:
        return np.zeros(0, np.float64)
    return np.concatenate(out).astype(np.float64)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [float((y_pred[y_true == k] == k).mean()) for k in np.unique(y_true)]
    return float(np.mean(recalls)) if recalls else float("nan")


def load_model(path: str | Path) -> Any:
    """Load a ``.keras`` model file, with a clear error for a wrong or missing file."""
    import keras

    from leukoedge.errors import ModelError

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such model file")
    try:
        return keras.models.load_model(p, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors ...
        raise ModelError(f"{p}: not a Keras model file ({type(e).__name__}: {e})") from e
