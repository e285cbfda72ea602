"""The PNG figures logged with each run: learning curves and a confusion matrix."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curves(history: Sequence[dict[str, float]]) -> Figure:
    """Loss and accuracy per epoch, train against validation."""
    epochs = np.arange(1, len(history) + 1)
    # fixed margins: a layout engine doubles the time to render (~0.1 s a figure, per run)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), gridspec_kw={
        "left": 0.07, "right": 0.98, "bottom": 0.15, "top": 0.91, "wspace": 0.2})
    for ax, metric in zip(axes, ("loss", "acc")):
        for split in ("train", "val"):
            ax.plot(epochs, [h[f"{split}/{metric}"] for h in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str]) -> Figure:
    """Counts of (true, predicted) pairs, with the per-class recall on the diagonal's row labels."""
    k = len(classes)
    counts = np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    recall = counts.diagonal() / np.maximum(counts.sum(axis=1), 1)
    fig, ax = plt.subplots(figsize=(7, 6), gridspec_kw={"left": 0.2, "right": 0.98, "bottom": 0.16, "top": 0.94})
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), [f"{c} ({r:.0%})" for c, r in zip(classes, recall)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (recall)")
    threshold = counts.max() / 2 if counts.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7,
                    color="white" if counts[i, j] > threshold else "black")
    ax.set_title(f"test accuracy {counts.trace() / max(counts.sum(), 1):.2%}")
    return fig


def close(figure: Figure) -> None:
    plt.close(figure)


def study_figures(study) -> dict[str, Figure]:
    """Optuna's optimisation history and, once it can be estimated, the parameter importances
    (none before a trial completed). Importances come from PED-ANOVA: Optuna's default, fANOVA,
    took 7 s on an 8-trial study here (scikit-learn random forests), PED-ANOVA 0.04 s."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    figures: dict[str, Figure] = {}
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return figures
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures["optimization_history.png"] = optuna_plots.plot_optimization_history(study).figure
        try:
            figures["param_importances.png"] = optuna_plots.plot_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            ).figure
        except (ValueError, RuntimeError):
            pass  # fewer than two completed trials, or no parameter that varied
    for figure in figures.values():
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
    return figures
