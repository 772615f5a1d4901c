"""Published reference values, as data: what the literature reports for the paper's setting.

Every value here is **reported, not re-run**: copied from the cited table, never computed by this
library. The chapters print them beside the paper profile's own results (:func:`reference_rows`), and
the book's page "Published numbers" renders :func:`markdown_table` (``python -m capt.reported`` prints
it; a test keeps the page and this table the same).

Values are percentages (accuracy under no attack, ``clean``, and under the named attack, ``robust``);
``None`` where the source gives no number for that column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from .validation import check_choice

STATUS = "reported, not re-run"

_FAP = "FAP (Zhou et al., NeurIPS 2024)"
_DEFEAT = "DEFEAT (ICLR 2026)"
PAPERS = {_FAP: "Y. Zhou, X. Xia, Z. Lin, B. Han, T. Liu. Few-Shot Adversarial Prompt Learning on Vision-Language "
                "Models. NeurIPS 2024 (arXiv:2403.14774)",
          _DEFEAT: "DEFEAT, ICLR 2026: APT and FAP re-run in APT's protocol (Li et al., CVPR 2024: an adversarially "
                   "fine-tuned ViT-B/32 backbone); 16 shots, mean of 11 datasets, clean / robust. The radius and "
                   "the attack of these means are not recorded here (the apt and apt_eps1 profiles run both radii)"}
# The FAP setting: CLIP ViT-B/32, prompts trained on ImageNet with 16 shots per class, eps = 1/255; the
# average is over ImageNet and the ten CoOp target datasets (our chapter 04's source + targets).
_CROSS = dict(chapter="04_cross_dataset", model="ViT-B/32", source="imagenet", shots=16, eps=1 / 255,
              datasets="ImageNet + 10 targets (average)")


@dataclass(frozen=True)
class Reported:
    method: str          # this library's method name (capt.METHODS)
    name: str            # the method's name in the source
    clean: float | None  # %
    robust: float | None  # %
    attack: str          # the robust column's attack, as the source names it
    source: str          # paper, table
    chapter: str | None  # None: on the published-numbers page only (no chapter runs its exact setting)
    model: str
    source_dataset: str
    shots: int
    eps: float | None    # None: not recorded
    datasets: str
    status: str = STATUS


def _row(method, name, clean, robust, attack, table, **setting) -> Reported:
    s = {**_CROSS, **setting}
    return Reported(method, name, clean, robust, attack, f"{_FAP}, {table}", s["chapter"], s["model"],
                    s["source"], s["shots"], s["eps"], s["datasets"])


REPORTED: tuple[Reported, ...] = (
    _row("zeroshot", "Zero-shot CLIP", 61.91, 4.26, "PGD-100", "Table 8"),
    _row("advvlp", "AdvVLP", 48.22, 23.25, "PGD-100", "Table 8"),
    _row("advmaple", "AdvMaPLe", 48.03, 23.93, "PGD-100", "Table 8"),
    _row("fap", "FAP", 47.76, 24.23, "PGD-100", "Table 8"),
    _row("advmaple", "AdvMaPLe", None, 17.40, "APGD-CE + APGD-DLR", "Table 12", chapter="07_attack_strength"),
    _row("fap", "FAP", None, 17.41, "APGD-CE + APGD-DLR", "Table 12", chapter="07_attack_strength"),
    # APT's protocol (profiles apt and apt_eps1): there, FAP no longer beats APT
    *(Reported(method, name, clean, robust, "as DEFEAT reports", _DEFEAT, None,
               "ViT-B/32, adversarially fine-tuned (APT's protocol)", "each dataset", 16, None, "11 datasets (average)")
      for method, name, clean, robust in (("apt", "APT", 51.08, 20.26), ("fap", "FAP", 50.50, 19.82))),
)
CHAPTERS = tuple(sorted({r.chapter for r in REPORTED if r.chapter is not None}))
COLUMNS = ["method", "name", "clean", "robust", "attack", "source", "chapter", "model", "source_dataset", "shots",
           "eps", "datasets", "status"]


def reference_rows(chapter: str | None = None, model: str | None = None, eps: float | None = None,
                   attack: str | None = None) -> pd.DataFrame:
    """The published rows for ``chapter`` (and, if given, ``model`` such as ``ViT-B-32``/``ViT-B/32``,
    ``eps``, ``attack``), one per method and attack; empty where the literature has nothing for it."""
    if chapter is not None:
        check_choice("chapter with published numbers", chapter, CHAPTERS)
    rows = [r for r in REPORTED
            if (chapter is None or r.chapter == chapter)
            and (model is None or r.model.replace("/", "-") == model.replace("/", "-"))
            and (eps is None or (r.eps is not None and abs(r.eps - eps) < 1e-9))
            and (attack is None or r.attack == attack)]
    return pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)


def beside(ours: pd.DataFrame, chapter: str, value_columns=("clean", "robust"), **setting) -> pd.DataFrame:
    """``ours`` (one row per method, columns ``method`` + ``value_columns``) with the published values of
    the same methods beside them, as columns ``<col> (reported)`` and ``reported in``."""
    ref = reference_rows(chapter, **setting)
    if ref.empty:
        return ours.copy()
    ref = ref.drop_duplicates("method", keep="first").set_index("method")
    out = ours.copy()
    for col in value_columns:
        if col in ref:
            out[f"{col} (reported)"] = out["method"].map(ref[col])
    out["reported in"] = out["method"].map(ref["source"])
    return out


def _fmt(v) -> str:
    return "—" if v is None or pd.isna(v) else f"{v:.2f}"


def markdown_table() -> str:
    """The published-numbers table as MyST/CommonMark markdown (the book's page embeds exactly this)."""
    lines = ["| chapter | method (ours) | name in the source | clean % | robust % | attack | eps | source |",
             "|---|---|---|---|---|---|---|---|"]
    for r in REPORTED:
        eps = "—" if r.eps is None else f"{round(r.eps * 255)}/255"
        lines.append(f"| {r.chapter or '—'} | `{r.method}` | {r.name} | {_fmt(r.clean)} | {_fmt(r.robust)} | "
                     f"{r.attack} | {eps} | {r.source} |")
    lines += [""] + [f"- {short}: {full}" for short, full in PAPERS.items()]
    return "\n".join(lines)


def chapter_view(rows: pd.DataFrame, S, chapter: str = "04_cross_dataset"):
    """Our per-method average over the chapter's datasets (clean and PGD, as the literature measures) beside
    the published values for the same setting (model, eps, PGD steps); where the literature has nothing
    for this setting (the mini world), a line that says so. Ours and theirs stay in separate columns."""
    from .report import Reading, Table, metric_of, with_metric

    attack = f"PGD-{S.pgd_steps}"
    ref = reference_rows(chapter, model=S.model, eps=S.eval_eps, attack=attack)
    if ref.empty:
        return Reading(f"*No published numbers for this setting ({S.model}, eps {S.eval_eps * 255:g}/255, {attack}). "
                       "The literature's are for ViT-B/32 at 1/255 under PGD-100 (the Published numbers page); "
                       "they appear here beside the paper profile's results.*")
    pgd = S.pgd().label
    # with_metric keeps the clean row on the most images (the attack's subset also carries one)
    r = with_metric(rows[rows["attack"].isin(["clean", pgd])], S.strong_attack)
    per_dataset = r.groupby(["method", "metric", "dataset"])["accuracy"].mean()
    ours = per_dataset.groupby(["method", "metric"]).mean().unstack("metric").rename(
        columns={metric_of(pgd, S.strong_attack): "robust"}).reset_index()
    ours = ours[["method", *[c for c in ("clean", "robust") if c in ours.columns]]].round(2)
    return Table(beside(ours, chapter), "detail",
                 caption=f"Ours (this run, mean over {r['dataset'].nunique()} datasets) beside the published "
                         f"values ({STATUS}), {attack} at eps {S.eval_eps * 255:g}/255")


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())

