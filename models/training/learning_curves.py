"""The comparison's plot: learning curves of every architecture, side by side, as a PNG."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def draw_learning_curves(
    histories: dict[str, dict[str, list[float]]], path: Path, metrics: tuple[str, ...] = ("loss", "accuracy")
) -> None:
    """One panel per architecture and metric: training and (where recorded) validation values per epoch."""
    columns = len(histories)
    figure, axes = plt.subplots(len(metrics), columns, figsize=(3.6 * columns, 6), squeeze=False, sharey="row")
    try:
        for column, (name, history) in enumerate(histories.items()):
            epochs = range(1, len(history.get("loss", [])) + 1)
            for row, metric in enumerate(metrics):
                axis = axes[row][column]
                axis.plot(epochs, history.get(metric, []), marker="o", label="train")
                if history.get(f"val_{metric}"):
                    axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
                axis.set_title(name if row == 0 else "")
                axis.set_xlabel("epoch")
                axis.xaxis.set_major_locator(MaxNLocator(integer=True))
                axis.set_ylabel(metric if column == 0 else "")
                axis.grid(alpha=0.3)
            axes[0][column].legend(fontsize="small")
        figure.suptitle("Learning curves")
        figure.tight_layout()
        temp = path.with_suffix(".tmp.png")
        figure.savefig(temp, dpi=90)
        temp.replace(path)
    finally:
        plt.close(figure)
