"""Seaborn figures in one house style: every chapter's figure comes from one of these."""

from __future__ import annotations


import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

METHOD_ORDER = ["zeroshot", "apt", "advvpt", "advvlp", "advmaple", "trades_maple", "fap", "capt"]
PALETTE = dict(zip(METHOD_ORDER, sns.color_palette("colorblind", len(METHOD_ORDER))))


def style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "axes.titleweight": "bold"})


def _order(values) -> list:
    present = list(dict.fromkeys(values))
    return [m for m in METHOD_ORDER if m in present] + [m for m in present if m not in METHOD_ORDER]


def _palette(hue_values, hue: str):
    if hue == "method":
        return {m: PALETTE.get(m, "grey") for m in hue_values}
    return sns.color_palette("colorblind", len(hue_values))


def clean_vs_robust(rows: pd.DataFrame, x: str = "dataset", hue: str = "method", title: str = "",
                    robust_attack: str | None = None):
    """Two panels (clean | robust accuracy) of bars with seed error bars, one bar per ``hue`` value."""
    style()
    clean = rows[rows["attack"] == "clean"]
    robust = rows[rows["attack"] != "clean"] if robust_attack is None else rows[rows["attack"] == robust_attack]
    hue_order = _order(rows[hue]) if hue == "method" else list(dict.fromkeys(rows[hue]))
    xs = list(dict.fromkeys(rows[x]))
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 0.9 * len(xs) + 4), 3.8), sharey=False)
    for ax, part, name in zip(axes, [clean, robust], ["clean accuracy (%)", "robust accuracy (%)"]):
        sns.barplot(data=part, x=x, y="accuracy", hue=hue, hue_order=hue_order, order=xs, ax=ax,
                    palette=_palette(hue_order, hue), errorbar="sd", err_kws={"linewidth": 1})
        ax.set_ylabel(name)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=40 if len(xs) > 3 else 0)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right" if len(xs) > 3 else "center")
        ax.legend().remove()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7), frameon=False,
               bbox_to_anchor=(0.5, 1.02))
    if title:
        fig.suptitle(title, y=1.1)
    fig.tight_layout()
    return fig


def lines(rows: pd.DataFrame, x: str, y: str = "accuracy", hue: str = "method", style_col: str | None = None,
          title: str = "", xlabel: str | None = None, ylabel: str = "accuracy (%)", logx: bool = False):
    """Accuracy against a swept quantity (eps, steps, shots, lambda), mean ± sd over seeds."""
    style()
    hue_order = _order(rows[hue]) if hue == "method" else list(dict.fromkeys(rows[hue]))
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


def tradeoff(rows: pd.DataFrame, title: str = ""):
    """Clean (x) against robust (y) accuracy per method, mean over seeds: up and right is better."""
    style()
    wide = (rows.assign(kind=rows["attack"].where(rows["attack"] == "clean", "robust"))
            .groupby(["method", "kind"])["accuracy"].mean().unstack())
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for m in _order(wide.index):
        ax.scatter(wide.loc[m, "clean"], wide.loc[m, "robust"], s=70, color=PALETTE.get(m, "grey"), label=m,
                   edgecolor="black", linewidth=0.5)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robust accuracy (%)")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    """Save a figure (PNG, tight) next to the run's tables, creating the folder."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")


def ablation_bars(rows: pd.DataFrame, source: str):
    """One panel per ablation group: robust accuracy on the source and mean robust accuracy on targets."""
    style()
    r = rows[rows["attack"] != "clean"].copy()
    r["where"] = r["dataset"].where(r["dataset"] == source, "targets (mean)")
    agg = r.groupby(["group", "variant", "where"], sort=False)["accuracy"].mean().reset_index()
    groups = list(dict.fromkeys(agg["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups), 3.6), sharey=True)
    for ax, g in zip(axes if len(groups) > 1 else [axes], groups):
        part = agg[agg["group"] == g]
        sns.barplot(data=part, x="variant", y="accuracy", hue="where", ax=ax,
                    palette=sns.color_palette("colorblind", 2), hue_order=[source, "targets (mean)"])
        ax.set_title(g, fontsize="small")
        ax.set_xlabel("")
        ax.set_ylabel("robust accuracy (%)")
        ax.tick_params(axis="x", rotation=45, labelsize="small")
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        if ax is not (axes[0] if len(groups) > 1 else axes):
            ax.legend().remove()
        else:
            ax.legend(frameon=False, fontsize="x-small")
    fig.tight_layout()
    return fig


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
