"""Seaborn figures in one house style: every chapter's figure comes from one of these."""

from __future__ import annotations


import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .methods import METHODS, method_order

PALETTE = dict(zip(METHODS, sns.color_palette("colorblind", len(METHODS))))


def style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "axes.titleweight": "bold"})


def _palette(hue_values, hue: str):
    if hue == "method":
        return {m: PALETTE.get(m, "grey") for m in hue_values}
    return sns.color_palette("colorblind", len(hue_values))


class NotDrawn:
    """A figure left out, with the sentence saying why: it displays as that sentence, and :func:`save`
    writes nothing for it (a stale PNG of an earlier run is removed)."""

    def __init__(self, title: str, why: str):
        self.title, self.why = title, why

    def _repr_markdown_(self) -> str:
        return f"*{self.title or 'Figure'}: not drawn, {self.why}.*"

    def __repr__(self) -> str:
        return self._repr_markdown_()


def lines(rows: pd.DataFrame, x: str, y: str = "accuracy", hue: str = "method", style_col: str | None = None,
          title: str = "", xlabel: str | None = None, ylabel: str = "accuracy (%)", logx: bool = False):
    """Accuracy against a swept quantity (eps, steps, shots, lambda), mean ± sd over seeds; a line needs
    two or more levels of ``x``, so with fewer this returns a :class:`NotDrawn` that says so."""
    levels = list(dict.fromkeys(rows[x]))
    if len(levels) < 2:
        found = f"only {xlabel or x} = {levels[0]}" if levels else f"no {xlabel or x} value"
        return NotDrawn(title, f"this run has {found}; a line needs two or more (the profile sets them)")
    style()
    hue_order = method_order(rows[hue]) if hue == "method" else list(dict.fromkeys(rows[hue]))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sns.lineplot(data=rows, x=x, y=y, hue=hue, hue_order=hue_order, style=style_col, markers=True,
                 errorbar="sd", palette=_palette(hue_order, hue), ax=ax)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def intervals(table: pd.DataFrame, y: str = "method", col: str = "metric", title: str = "",
              xlabel: str = "accuracy (%)"):
    """Dot plot with 95 % interval bars: one panel per ``col`` value, one row per ``y`` value.

    ``table`` is :func:`capt.stats.accuracy_table` output (``y``, ``col``, mean, lo, hi). Legible at
    page width for any number of methods: rows, not bars."""
    style()
    panels = list(dict.fromkeys(table[col]))
    ys = method_order(table[y]) if y == "method" else list(dict.fromkeys(table[y]))
    fig, axes = plt.subplots(1, len(panels), figsize=(min(9.5, 3.1 * len(panels) + 1.2), 0.3 * len(ys) + 1.1),
                             sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = table[table[col] == panel].set_index(y)
        for i, name in enumerate(ys):
            if name not in part.index:
                continue
            r = part.loc[name]
            colour = PALETTE.get(name, "black") if y == "method" else "black"
            ax.errorbar(r["mean"], i, xerr=[[r["mean"] - r["lo"]], [r["hi"] - r["mean"]]], fmt="o", color=colour,
                        ecolor=colour, elinewidth=1.6, capsize=3, markersize=6)
        ax.set_title(panel, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_yticks(range(len(ys)), ys)
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def differences(table: pd.DataFrame, title: str = ""):
    """Paired differences with their 95 % intervals (:func:`capt.report.compare` rows with a ``chapter``
    column): one panel per metric, one row per chapter, a line at zero."""
    fig = intervals(table.rename(columns={"diff": "mean"}), y="chapter", col="metric", title=title,
                    xlabel="difference (points)")
    for ax in fig.axes:
        ax.axvline(0, color="grey", linewidth=1, zorder=0)
    return fig


def save(fig, path) -> None:
    """Save a figure (PNG, tight) next to the run's tables, creating the folder."""
    from pathlib import Path

    path = Path(path)
    if isinstance(fig, NotDrawn):
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")


def examples(datasets, per_row: int = 8, split: str = "test"):
    """A grid of the first images of each dataset (one row each), titled with their class names."""
    from .data import load_dataset

    style()
    names = list(datasets)
    fig, axes = plt.subplots(len(names), per_row, figsize=(1.25 * per_row, 1.45 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        ds = load_dataset(name, split)
        step = max(1, len(ds) // per_row)
        for ax, i in zip(row, range(0, step * per_row, step)):
            x, y = ds[i]
            ax.imshow(x.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(ds.classnames[y], fontsize=6.5)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def show(fig) -> None:
    """Display ``fig`` here, in the cell's outputs, and close it (so it is not shown a second time at
    the end of the cell): a chapter's key figure then sits above its headline table."""
    from IPython.display import display

    display(fig)
    if not isinstance(fig, NotDrawn):
        plt.close(fig)
