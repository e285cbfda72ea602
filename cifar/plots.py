"""The PNG figures logged with runs: learning curves, confusion matrix, diagnostics and sweep plots."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curves(history: Sequence[dict[str, float]]) -> Figure:
    """Loss and accuracy per epoch, train against validation (where there is a validation set)."""
    epochs = np.arange(1, len(history) + 1)
    splits = ("train", "val") if "val/acc" in history[0] else ("train",)
    # fixed margins: a layout engine doubles the time to render (~0.1 s a figure, per run)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), gridspec_kw={
        "left": 0.07, "right": 0.98, "bottom": 0.15, "top": 0.91, "wspace": 0.2})
    for ax, metric in zip(axes, ("loss", "acc")):
        for split in splits:
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
        # PED-ANOVA warns "... Parameter importances will be equal." when it has too few trials to
        # compare (one trial, or as many in its top quantile as in all): no plot then
        warnings.filterwarnings("error", ".*Parameter importances will be equal", UserWarning)
        try:
            figures["param_importances.png"] = optuna_plots.plot_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            ).figure
        except (ValueError, RuntimeError, UserWarning):
            pass  # too few completed trials, or no parameter that varied
    for figure in figures.values():
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
    return figures


def gradient_flow(gradients: dict[str, tuple[float, float]]) -> Figure:
    """Mean and max |gradient| per layer, input to output, on a log scale: vanishing or exploding layers stand out."""
    names = list(gradients)
    means, maxima = np.array([gradients[n] for n in names]).reshape(-1, 2).T
    bottom = min(0.5, 0.1 + 0.011 * max(map(len, names), default=0))  # room for the slanted names
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4), gridspec_kw={
        "left": 0.1, "right": 0.98, "bottom": bottom, "top": 0.9})
    x = np.arange(len(names))
    ax.bar(x, maxima, color="lightsteelblue", label="max |grad|")
    ax.bar(x, means, color="steelblue", label="mean |grad|")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_title("gradient flow (last step of the epoch)")
    ax.legend()
    return fig


def weight_histograms(weights: dict[str, np.ndarray]) -> Figure:
    """One histogram per layer's weights, with its mean and standard deviation."""
    columns = min(4, len(weights))
    rows = -(-len(weights) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.2 * rows), squeeze=False,
                             gridspec_kw={"hspace": 0.7, "wspace": 0.3, "left": 0.05, "right": 0.98,
                                          "bottom": 0.08, "top": 0.9})
    for ax, (name, values) in zip(axes.flat, weights.items()):
        counts, edges = np.histogram(values, bins=60)
        ax.stairs(counts, edges, fill=True, color="steelblue")  # one artist: 3x faster to draw than ax.hist
        ax.set_title(f"{name}\nmean {values.mean():.3g}, std {values.std():.3g}", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(weights):]:
        ax.axis("off")
    return fig


def prediction_grid(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes: Sequence[str]) -> Figure:
    """Images with their predicted (and, when wrong, true) class; mistakes framed and labelled in red.

    One image of the whole grid and one text per cell: a subplot per image took 3x as long to draw.
    """
    columns, side, gap = 8, images.shape[1], 18  # gap: room for the labels under each image
    rows = -(-len(images) // columns)
    canvas = np.full((rows * (side + gap), columns * (side + 4), 3), 255, dtype=np.uint8)
    width = 1.1 * columns
    height = width * canvas.shape[0] / canvas.shape[1] + 0.4  # + the title
    fig, ax = plt.subplots(figsize=(width, height), gridspec_kw={
        "left": 0.01, "right": 0.99, "bottom": 0.01, "top": 1 - 0.4 / height})
    for i, (image, label, predicted) in enumerate(zip(images, labels, predictions)):
        top, left = (i // columns) * (side + gap), (i % columns) * (side + 4)
        wrong = label != predicted
        canvas[top : top + side + 4, left : left + side + 4] = (220, 0, 0) if wrong else (255, 255, 255)
        canvas[top + 2 : top + 2 + side, left + 2 : left + 2 + side] = image
        text = f"{classes[predicted]}\n(true: {classes[label]})" if wrong else classes[predicted]
        ax.text(left + side / 2 + 2, top + side + 5, text, ha="center", va="top", fontsize=6.5,
                color="red" if wrong else "black")
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"validation sample: {(labels == predictions).mean():.0%} right", fontsize=9)
    return fig


def per_class_accuracy(accuracy: dict[str, float]) -> Figure:
    """Accuracy of each class as labelled horizontal bars, worst class at the bottom."""
    ordered = sorted(accuracy.items(), key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(ordered) + 1), gridspec_kw={
        "left": 0.2, "right": 0.9, "bottom": 0.12, "top": 0.9})
    bars = ax.barh([c for c, _ in ordered], [a for _, a in ordered], color="steelblue")
    ax.bar_label(bars, labels=[f"{a:.1%}" for _, a in ordered], padding=3, fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_title("validation accuracy per class")
    return fig
