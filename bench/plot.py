"""Pictures of a benchmark's table: grouped bars, one group per load level, one bar per target.

matplotlib is a benchmark-only need, so it is installed into the running environment on first
use rather than carried by relaybox's own install.
"""

from __future__ import annotations

from pathlib import Path

from bench.machine import RESULTS, describe, ensure_installed


def grouped_bars(
    name: str,
    panels: list[tuple[str, dict[str, list[float]]]],
    groups: list[str],
    *,
    title: str,
    log_panels: frozenset[str] = frozenset(),
) -> Path:
    """One panel per (y label, {target: value per group}); writes `bench/results/<name>.png`."""
    ensure_installed("matplotlib", "the plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One colour per target in every panel, even where a panel leaves some targets out.
    targets = list(dict.fromkeys(target for _, series in panels for target in series))
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for axis, (label, series) in zip(axes[:, 0], panels, strict=True):
        width = 0.8 / len(series)
        for index, (target, values) in enumerate(series.items()):
            positions = [group + (index - (len(series) - 1) / 2) * width for group in range(len(groups))]
            axis.bar(positions, values, width, label=target, color=f"C{targets.index(target)}")
        axis.set_xticks(range(len(groups)), groups)
        axis.set_ylabel(label)
        if label in log_panels:
            axis.set_yscale("log")
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize="small", ncol=3)
    axes[0, 0].set_title(title, fontsize="medium")
    figure.text(0.01, 0.005, describe(), fontsize="x-small", color="gray")
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
