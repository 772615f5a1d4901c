"""What a chapter shows: compact tables with 95 % intervals, verdicts and readings computed from the run.

Every number here comes from the rows of the run being rendered (through :mod:`capt.stats`: intervals
over seeds and images, paired differences on the same images), so no sentence can disagree with the
table beside it. Tables display as plain HTML (no index column, no scroll box); the headline table of a
chapter sits in an element of class ``capt-headline``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import stats
from .attacks import kind_of_label
from .chapters import CHAPTERS, get_chapter
from .methods import method_order

# -- which column is which ------------------------------------------------------------------------------
def metric_of(label: str, strong: str) -> str:
    """A row's attack label as a table column: clean, the strong (headline) attack, or the cheap PGD."""
    kind = kind_of_label(label)
    if kind is not None and kind.family == "clean":
        return "clean"
    if kind is not None and kind.name == strong:
        return f"robust ({strong.upper()})"
    return f"robust ({(kind.column if kind is not None else None) or label.upper()})"


def metrics(rows: pd.DataFrame, strong: str) -> list[str]:
    """The metric columns present, in reading order: clean, headline robust, then the others."""
    present = list(dict.fromkeys(metric_of(a, strong) for a in rows["attack"]))
    head = [m for m in ("clean", f"robust ({strong.upper()})") if m in present]
    return head + [m for m in present if m not in head]


def with_metric(rows: pd.DataFrame, strong: str) -> pd.DataFrame:
    """Rows with their metric column. Clean accuracy is measured twice where the strong attack runs on a
    smaller subset (the paper profile); the table shows the one on the larger set, beside PGD."""
    rows = rows.assign(metric=[metric_of(a, strong) for a in rows["attack"]])
    clean = rows["metric"] == "clean"
    if clean.any():
        keys = [c for c in ("method", "seed", "dataset", "shots", "group", "variant", "part", "run_key")
                if c in rows.columns]
        biggest = rows[clean].groupby(keys, dropna=False)["n"].transform("max")
        rows = rows[~clean | (rows["n"] == biggest.reindex(rows.index))]
    return rows


# -- display ----------------------------------------------------------------------------------------------
class Table:
    """A table that renders as a plain HTML table (no index) inside ``<div class=...>``; deterministic
    output, so nbval compares it exactly."""

    def __init__(self, frame: pd.DataFrame, kind: str = "detail", caption: str = "", note: str = ""):
        self.frame, self.kind, self.caption, self.note = frame.reset_index(drop=True), kind, caption, note

    def _repr_html_(self) -> str:
        body = self.frame.to_html(index=False, border=0, escape=True, na_rep="–")
        cap = f"<p><strong>{html.escape(self.caption)}</strong></p>" if self.caption else ""
        note = f"<p><small>{html.escape(self.note)}</small></p>" if self.note else ""
        return f'<div class="capt-{self.kind}">{cap}{body}{note}</div>'

    def __repr__(self) -> str:
        text = self.frame.to_string(index=False, na_rep="-")
        return "\n".join(x for x in (self.caption, text, self.note) if x)


class Reading:
    """Generated prose (Markdown), shown as a cell's output."""

    def __init__(self, text: str):
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def _seeds_note(table: pd.DataFrame) -> str:
    most = int(table["seeds"].max())
    if most == 1:
        return "One seed: the interval covers the test images only, not the variation between training runs."
    return (f"Mean over {stats.seeds_label(most)} (zero-shot CLIP, which does not train, has one) with its 95 % "
            "interval over seeds and test images; images per seed: " + ", ".join(map(str, sorted(set(table["n"])))) + ".")


def _cell(r) -> str:
    return stats.format_interval(r["mean"], r["lo"], r["hi"])


# -- tables -------------------------------------------------------------------------------------------------
def interval_table(rows: pd.DataFrame, index: Sequence[str], strong: str) -> pd.DataFrame:
    """``index`` columns, then one "mean [lo, hi]" column per metric; methods in the house order."""
    r = with_metric(rows, strong)
    t = stats.accuracy_table(r, by=[*index, "metric"])
    t["cell"] = [_cell(x) for _, x in t.iterrows()]
    wide = t.pivot_table(index=list(index), columns="metric", values="cell", aggfunc="first")
    wide = wide[[m for m in metrics(rows, strong) if m in wide.columns]].reset_index()
    wide.columns.name = None
    return _sort(wide, rows), t


def _sort(frame: pd.DataFrame, like: pd.DataFrame | None = None) -> pd.DataFrame:
    """Methods in the house order; every other key in the order it first appears in the rows."""
    keys = [c for c in frame.columns if c in ("role", "dataset", "task", "group", "variant", "ablation", "shots",
                                              "split", "method")]
    if not keys:
        return frame
    source = like if like is not None else frame
    ranks = {}
    for k in keys:
        seen = method_order(source[k]) if k == "method" else list(dict.fromkeys(source[k]))
        ranks[k] = {v: i for i, v in enumerate(seen)}
    return frame.sort_values(keys, key=lambda s: s.map(ranks[s.name]), kind="stable").reset_index(drop=True)


def headline(rows: pd.DataFrame, strong: str, caption: str, by: Sequence[str] = ("method",)) -> Table:
    """A chapter's headline: one row per method, clean and robust accuracy with 95 % intervals."""
    wide, t = interval_table(rows, by, strong)
    return Table(wide, "headline", caption, _seeds_note(t))


def detail(rows: pd.DataFrame, strong: str, index: str | Sequence[str] = "dataset", metric: str | None = None,
           caption: str = "", across: str | None = None) -> Table:
    """Mean accuracy per ``index`` value (rows), one column per method under one metric (the headline
    robust one by default), or one column per metric (``across="metric"``; the default with one method).
    Means only, so the table fits the page; the intervals are in the headline table and the saved rows."""
    index = [index] if isinstance(index, str) else list(index)
    r = with_metric(rows, strong)
    across = across or ("metric" if r["method"].nunique() == 1 else "method")
    if across == "metric":
        t = stats.accuracy_table(r, by=[*index, "metric"])
        wide = t.pivot_table(index=index, columns="metric", values="mean", aggfunc="first", sort=False)
        wide = wide[[m for m in metrics(rows, strong) if m in wide.columns]].round(1).reset_index()
        what = "accuracy (%)" if r["method"].nunique() > 1 else f"{r['method'].iloc[0]}: accuracy (%)"
    else:
        metric = metric or f"robust ({strong.upper()})"
        t = stats.accuracy_table(r[r["metric"] == metric], by=[*index, "method"])
        wide = t.pivot_table(index=index, columns="method", values="mean", aggfunc="first", sort=False)
        wide = wide[method_order(wide.columns)].round(1).reset_index()
        what = f"{metric} accuracy (%)"
    wide.columns.name = None
    wide = _sort(wide, rows)
    if across == "method" and wide.shape[1] - len(index) > len(wide):
        wide = _methods_as_rows(wide, index)
    return Table(wide, "detail", caption or f"{what}, mean per {', '.join(index)}")


def _methods_as_rows(wide: pd.DataFrame, index: Sequence[str]) -> pd.DataFrame:
    """``wide`` (one column per method) turned so that methods are the rows and each ``index`` value a
    column: with more methods than values, the table is then narrower than it is long."""
    def label(values) -> str:
        return ", ".join(f"{v} shot{'' if str(v) == '1' else 's'}" if k == "shots" else str(v)
                         for k, v in zip(index, values))

    body = wide.set_index(list(index))
    body.index = [label(v if isinstance(v, tuple) else (v,)) for v in body.index]
    out = body.T.rename_axis("method").reset_index()
    out.columns.name = None
    return out


def figure(rows: pd.DataFrame, strong: str, y: str = "method", title: str = ""):
    """The key figure: per metric, each ``y`` value's mean with its 95 % interval (a dot plot)."""
    from .plots import intervals

    r = with_metric(rows, strong)
    t = stats.accuracy_table(r, by=[y, "metric"])
    order = {m: i for i, m in enumerate(metrics(rows, strong))}
    t = t.sort_values("metric", key=lambda s: s.map(order), kind="stable")
    return intervals(t, y=y, col="metric", title=title)


def levels(rows: pd.DataFrame, strong: str, by: str, what: str) -> Reading:
    """A reading without a comparison: each metric's level per ``by`` value, with its interval."""
    wide, t = interval_table(rows, [by], strong)
    parts = []
    for m in metrics(rows, strong):
        cells = [f"{x[by]} {stats.format_interval(x['mean'], x['lo'], x['hi'])} %"
                 for _, x in t[t["metric"] == m].iterrows()]
        parts.append(f"{m}: {'; '.join(cells)}")
    clean = t[t["metric"] == "clean"]["mean"].mean()
    robust = t[t["metric"] == f"robust ({strong.upper()})"]["mean"].mean()
    close = (f"**What the evidence supports:** {what} keeps {robust:.1f} % accuracy under the headline attack, "
             f"against {clean:.1f} % on clean images (means over the groups above).")
    return Reading("\n".join(f"- {p}" for p in parts) + "\n\n" + close)


def save_rows(rows: pd.DataFrame, path: str | Path) -> Path:
    """Write a chapter's rows (per-image masks included) to CSV atomically."""
    from .io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False)
    return path


# -- verdicts and readings ----------------------------------------------------------------------------------
def _best_baseline(rows: pd.DataFrame, method: str) -> str | None:
    others = rows[~rows["method"].isin([method, "zeroshot"])]
    if others.empty:
        return None
    return others.groupby("method").apply(lambda g: g["correct"].sum() / g["n"].sum(), include_groups=False).idxmax()


def compare(rows: pd.DataFrame, strong: str, method: str = "capt") -> pd.DataFrame:
    """Per metric: ``method`` against the best other trained method on it, paired on the same images:
    diff, lo, hi and verdict (win / loss / tie / undecided, from whether the interval excludes 0)."""
    r = with_metric(rows, strong)
    out = []
    for m in metrics(rows, strong):
        part = r[r["metric"] == m]
        best = _best_baseline(part, method)
        if best is None or method not in set(part["method"]):
            continue
        d = stats.paired_difference(part, method, best, by=["metric"]).iloc[0]
        means = stats.accuracy_table(part[part["method"].isin([method, best])], by=["method"]).set_index("method")
        out.append({"metric": m, "method": method, "baseline": best, "ours": means.loc[method, "mean"],
                    "theirs": means.loc[best, "mean"], "diff": d["diff"], "lo": d["lo"], "hi": d["hi"],
                    "verdict": d["verdict"], "seeds": int(means["seeds"].min())})
    return pd.DataFrame(out)


_WORDS = {"win": "wins", "loss": "loses", "tie": "ties", "undecided": "is undecided"}


def verdict(rows: pd.DataFrame, strong: str, method: str = "capt") -> str:
    """One line per metric: the paired difference to the best baseline with its 95 % interval."""
    c = compare(rows, strong, method)
    if c.empty:
        return f"{method} was not run beside any trained baseline."
    return "\n".join(f"{x.metric}: {method} {x.ours:.1f} vs {x.baseline} {x.theirs:.1f}: {x['diff']:+.1f} points, "
                     f"95 % interval [{x.lo:+.1f}, {x.hi:+.1f}] -> {x.verdict}" for _, x in c.iterrows())


def reading(rows: pd.DataFrame, strong: str, where: str, method: str = "capt") -> Reading:
    """The chapter's reading, generated: per metric the verdict in words, then one closing sentence on
    what the evidence supports."""
    c = compare(rows, strong, method)
    if c.empty:
        return Reading(f"*{method} was not run beside a trained baseline {where}; nothing to compare.*")
    sentences = []
    for _, x in c.iterrows():
        sentences.append(f"On {x.metric} accuracy over {where}, {method.upper()} reaches {x.ours:.1f} % against "
                         f"{x.theirs:.1f} % for the best baseline, {x.baseline}: a difference of {x['diff']:+.1f} "
                         f"points (95 % interval {x.lo:+.1f} to {x.hi:+.1f}), so {method.upper()} "
                         f"**{_WORDS[x.verdict]}** on this measure.")
    seeds = int(c["seeds"].min())
    sentences.append(closing(c, method, seeds))
    return Reading(" ".join(sentences))


def closing(c: pd.DataFrame, method: str, seeds: int) -> str:
    """What the evidence supports, in one plain sentence."""
    decided = {x.metric: x.verdict for _, x in c.iterrows() if x.verdict in ("win", "loss")}
    wins = [m for m, v in decided.items() if v == "win"]
    losses = [m for m, v in decided.items() if v == "loss"]
    base = f" ({seeds} seed{'s' if seeds != 1 else ''})"
    if not decided:
        return (f"**What the evidence supports{base}:** no difference between {method.upper()} and the best "
                "baseline that this run can resolve.")
    parts = []
    if wins:
        parts.append(f"{method.upper()} is better on {', '.join(wins)}")
    if losses:
        parts.append(f"worse on {', '.join(losses)}" if wins else f"{method.upper()} is worse on {', '.join(losses)}")
    return f"**What the evidence supports{base}:** {'; '.join(parts)}; every other gap is within the noise."


def focus(chapter: str, rows: pd.DataFrame, S) -> tuple[pd.DataFrame, str]:
    """The rows a chapter's headline, figure and reading are about, and a phrase saying which (the
    chapter table's ``focus``: one definition for the chapter and the intro)."""
    c = get_chapter(chapter)
    if c.focus is None:
        raise ValueError(f"chapter {chapter} has no headline focus; chapters with one: "
                         f"{', '.join(n for n, x in CHAPTERS.items() if x.focus is not None)}")
    return c.focus(rows, S)


def glance_line(c: pd.DataFrame, strong: str, chapter: str, where: str) -> dict:
    """One row of the intro's results-at-a-glance table, from the chapter's :func:`compare` rows."""
    out = {"chapter": chapter, "on": where}
    for _, x in c.iterrows():
        if x.metric in ("clean", f"robust ({strong.upper()})"):
            # no-break spaces: the difference and its interval wrap as one unit, never inside it
            out[x.metric] = f"{x.verdict} vs {x.baseline}: {x['diff']:+.1f}\u00a0[{x.lo:+.1f},\u00a0{x.hi:+.1f}]"
    return out


def write_glance(found: dict, path: str | Path, titles: dict | None = None) -> Path:
    """The intro's results-at-a-glance (Markdown), from the chapters' saved rows:
    ``found`` maps chapter -> (its Settings, its rows' CSV). With ``titles`` (chapter -> its title), each
    row names its chapter by title, linked to it, and a summary figure (``glance.png`` beside ``path``)
    shows every comparison at once."""
    from .io import atomic_write_text

    lines, diffs = [], []
    for chapter, (S, csv) in found.items():
        if Path(csv).is_file():
            rows, where = focus(chapter, pd.read_csv(csv), S)
            c = compare(rows, S.strong_attack)  # one comparison: the table's row and the figure's
            lines.append(glance_line(c, S.strong_attack, chapter, where))
            diffs.append(c.assign(chapter=(titles or {}).get(chapter, chapter)))
    if not lines:
        text = "*No chapter has been run yet: `capt book` runs them, then this table is generated.*\n"
    else:
        frame = pd.DataFrame(lines).fillna("–")
        if titles:
            frame["chapter"] = [f"{{doc}}`{titles.get(c, c)} </book/experiments/{c}>`" for c in frame["chapter"]]
        text = ("Generated from this build's run: CAPT against the best other method on each measure, the paired "
                "difference in points with its 95 % interval, and the verdict it supports.\n\n"
                + markdown_table(frame))
        both = pd.concat(diffs, ignore_index=True)
        if titles and not both.empty:
            from .plots import differences, save

            figure_path = Path(path).with_name("glance.png")
            save(differences(both, title="CAPT minus the best other method, per chapter"), figure_path)
            text = (f"```{{figure}} /book/experiments/{figure_path.name}\n:alt: CAPT against the best baseline in "
                    f"each chapter\n\nEach chapter's headline comparison: the paired difference in points (CAPT "
                    f"minus the best other method on that measure) with its 95 % interval; right of zero, CAPT "
                    f"is ahead.\n```\n\n" + text)
    atomic_write_text(path, text)
    return Path(path)


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (no index), cells escaped for Markdown."""
    def cell(v):
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(cell, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


# -- chapter-specific views -------------------------------------------------------------------------------
def competence(rows: pd.DataFrame, strong: str) -> Table:
    """Zero-shot accuracy per dataset beside chance (1 / number of classes, from the rows): is the model
    competent?"""
    classes = rows.groupby("dataset")["classes"].first()
    wide, t = interval_table(rows, ["dataset", "role"], strong)
    wide.insert(2, "chance", [round(100.0 / classes[d], 1) for d in wide["dataset"]])
    return Table(wide, "headline", "Zero-shot accuracy (%) per dataset, beside chance", _seeds_note(t))


def harmonic_means(rows: pd.DataFrame, strong: str) -> Table:
    """Base, new and their harmonic mean per method (means over tasks and seeds) for each metric."""
    r = with_metric(rows, strong)
    m = r.groupby(["method", "metric", "split"])["accuracy"].mean().unstack("split")
    m["HM"] = 2 * m["base"] * m["new"] / (m["base"] + m["new"]).where(lambda s: s > 0)
    wide = m["HM"].unstack("metric").round(1).reset_index()
    wide = wide[["method", *[c for c in metrics(rows, strong) if c in wide.columns]]]
    wide.columns.name = None
    return Table(_sort(wide, rows), "detail", "Harmonic mean of base and new accuracy (%)")


def ablation_reading(rows: pd.DataFrame, strong: str, main_keys: set) -> Reading:
    """Per ablation group: each variant against CAPT's own setting, paired on the same images, on the
    headline robust accuracy."""
    head = f"robust ({strong.upper()})"
    r = with_metric(rows, strong)
    r = r[r["metric"] == head]
    lines, decided = [], []
    for group, g in r.groupby("group", sort=False):
        default = g.loc[g["run_key"].isin(main_keys), "variant"]
        if default.empty:
            continue
        ref = default.iloc[0]
        g = g.assign(method=g["variant"])
        for variant in dict.fromkeys(g["variant"]):
            if variant == ref:
                continue
            d = stats.paired_difference(g, variant, ref, by=["metric"]).iloc[0]
            lines.append(f"- {group}: {variant} against {ref}: {d['diff']:+.1f} points "
                         f"[{d['lo']:+.1f}, {d['hi']:+.1f}] -> {d['verdict']}")
            if d["verdict"] in ("win", "loss"):
                decided.append(f"{group} = {variant} ({'better' if d['verdict'] == 'win' else 'worse'})")
    close = ("**What the evidence supports:** " + ("; ".join(decided) + " than CAPT's own setting; no other "
             "variant differs beyond the noise." if decided else "no variant differs from CAPT's own setting "
             "beyond the noise of this run."))
    return Reading(f"Headline robust accuracy, every variant against CAPT's own setting:\n\n"
                   + "\n".join(lines) + "\n\n" + close)


def masking_checks(strong_rows: pd.DataFrame, eps_rows: pd.DataFrame, strong: str, reference: str = "autoattack"
                   ) -> Reading:
    """Gradient-masking checks per method: the strong attack <= PGD, close to the reference AutoAttack,
    noise hurts less than PGD, and robust accuracy falls as eps grows."""
    lines, failed = [], []
    for method, g in strong_rows.groupby("method", sort=False):
        acc = g.groupby("attack")["accuracy"].mean()
        kinds = {a: getattr(kind_of_label(a), "name", None) for a in acc.index}
        pgd = acc[[a for a in acc.index if kinds[a] == "pgd"]].min()
        ours = next((acc[a] for a in acc.index if kinds[a] == strong), None)
        checks = []
        if ours is not None:
            ok = ours <= pgd + 1e-9
            checks.append(f"{strong.upper()} {ours:.1f} % {'<=' if ok else '>'} PGD {pgd:.1f} %")
            failed += [] if ok else [method]
            if reference in acc and reference != strong:
                checks.append(f"reference {reference} {acc[reference]:.1f} %")
        if "noise" in acc:
            checks.append(f"noise {acc['noise']:.1f} %")
        mine = eps_rows[eps_rows["method"] == method]
        s = mine[[metric_of(a, strong) != "clean" for a in mine["attack"]]].groupby("eps")["accuracy"].mean()
        falls = bool((s.diff().dropna() <= 1e-9).all())
        failed += [] if falls else [method]
        checks.append(f"robust accuracy {'falls' if falls else 'does NOT fall'} as eps grows")
        lines.append(f"- {method}: " + "; ".join(checks))
    close = ("**What the evidence supports:** no sign of gradient masking in these checks." if not failed else
             f"**What the evidence supports:** a check fails for {', '.join(dict.fromkeys(failed))}: read its "
             "robust accuracy with care.")
    return Reading("\n".join(lines) + "\n\n" + close)
