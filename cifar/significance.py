"""What several significance tests made together say: shared by ``cifar.evaluate`` (McNemar's test of each model
against the first) and ``cifar.report`` (Welch's test of each configuration over seeds against the best)."""

from __future__ import annotations


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together: each one is the smallest level at which the
    procedure says its two models differ, so that chance alone makes any of the comparisons look like a
    difference at that level no more often than the level says. The smallest p-value is multiplied by the
    number of comparisons, the next by one less, and so on, kept in order and at most 1."""
    adjusted, largest = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(sorted(range(len(p_values)), key=p_values.__getitem__)):
        largest = max(largest, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = largest
    return adjusted
