"""Write the eight chapter notebooks, unexecuted, in one shape (question, hidden parameters and setup,
key figure, headline table, generated reading, details). Run from the checkout's root:
``python scripts/notebooks.py``, then execute them with ``capt run ci`` and copy them back.
"""
import os
import sys
from pathlib import Path

os.chdir(Path(__file__).resolve().parents[1])

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path.cwd()))
from capt.notebook import CHAPTERS  # noqa: E402

HIDE = {"tags": ["hide-input"]}


def rerun(name):
    return (f"Re-run this chapter with another profile: `papermill notebooks/{name}.ipynb out.ipynb -p profile paper` "
            f"(a profile in `profiles/`, or `-p profile path/to/file.yaml`; any setting with `-p NAME VALUE`), "
            f"or every chapter with `capt run PROFILE`.")


def params_cell(name):
    knobs = CHAPTERS[name]
    lines = ["# The profile (profiles/NAME.yaml, or a .yaml path) holds every value; papermill -p overrides any.",
             'profile = "mini"']
    if knobs:
        lines.append("# This chapter's own knobs (None: the profile's value)")
        lines += [f"{k} = None" for k in knobs]
    return new_code_cell("\n".join(lines), metadata={"tags": ["parameters", "hide-cell"]})


def setup(name, plan, table):
    src = (f"from capt import plans, plots, report\nfrom capt.notebook import Settings\n\n"
           f'S = Settings.for_chapter("{name}", globals())  # every value checked here, nothing loaded\n')
    if plan:
        src += (f"rows = S.experiment().run_jobs(plans.{plan}(S))\n"
                f'report.save_rows(rows, S.output / "tables" / "{table}.csv")\n')
    src += "print(S.describe())"
    return new_code_cell(src, metadata=HIDE)


def code(src):
    return new_code_cell(src, metadata=HIDE)


def md(src):
    return new_markdown_cell(src)


def chapter(name, title, question, body, cells, plan, table):
    head = md(f"# {title}\n\n**The question.** {question}\n\n{body}")
    return [head, params_cell(name), setup(name, plan, table), *cells, md("---\n\n" + rerun(name))]


C = {}
C["00_mini_world"] = chapter(
    "00_mini_world", "The mini world",
    "Is the book's miniature of the paper's setting a fair stand-in: is its CLIP competent on clean images, "
    "and as fragile under attack as real CLIP?",
    "No pretrained CLIP and no real dataset can be downloaded on the machines this book is built on, so it "
    "carries its own miniature: procedurally generated 32×32 images of coloured shapes with captions, and a "
    "small open_clip CLIP pretrained on them by `data_scripts/pretrain_mini.py`. A colour×shape source task "
    "plays ImageNet's role, other tasks play the cross-dataset targets, and shifted versions of the source "
    "play ImageNet-V2/-Sketch/-A/-R.",
    [code('fig = plots.examples([S.source, *S.targets[:4], *S.shifts])\n'
          'plots.save(fig, S.output / "figures" / "mini_world_examples.png")'),
     code("main = rows[rows.part.isna()]\nreport.competence(main, S.strong_attack)"),
     code('report.levels(main, S.strong_attack, by="role", what="zero-shot mini CLIP")'),
     md("## The mini CLIP"),
     code("import json\nimport capt.mini_model as mm\nimport pandas as pd\n\n"
          "info = json.loads(mm.DEFAULT_REPORT.read_text())\n"
          'keys = ("reproduce", "parameters", "size_bytes", "steps", "batch", "pretrain_seconds")\n'
          'report.Table(pd.DataFrame({"what": keys, "value": [str(info[k]) for k in keys]}))')],
    "zeroshot_robustness", "mini_world")

C["01_zeroshot_robustness"] = chapter(
    "01_zeroshot_robustness", "Zero-shot CLIP is not robust",
    "How much of frozen CLIP's accuracy survives a perturbation a person cannot see?",
    "The frozen CLIP with its hand-crafted template is attacked on every dataset of the protocol: the "
    "AutoAttack-grade attack and PGD at the book's radius, and PGD at growing radii. This is the gap "
    "adversarial prompt tuning tries to close.",
    [code('main = rows[rows.part.isna()]\nfig = report.figure(main, S.strong_attack, y="role")\n'
          'plots.save(fig, S.output / "figures" / "zeroshot_robustness.png")'),
     code('report.headline(main, S.strong_attack, "Zero-shot CLIP (%), by the role of the dataset", by=["role"])'),
     code('report.levels(main, S.strong_attack, by="role", what="zero-shot CLIP")'),
     md("## Details"),
     code('sweep = rows[rows.part == "eps"]\nsweep = sweep.assign(eps255=(sweep["eps"] * 255).round(1))\n'
          'fig = plots.lines(sweep, x="eps255", hue="role", xlabel="PGD radius eps (x 1/255)",\n'
          '                  title="Zero-shot CLIP under PGD")\n'
          'plots.save(fig, S.output / "figures" / "zeroshot_eps.png")'),
     code('report.detail(main, S.strong_attack, index=["role", "dataset"])')],
    "zeroshot_robustness", "zeroshot_robustness")

C["02_in_distribution"] = chapter(
    "02_in_distribution", "In-distribution few-shot robustness",
    "Tuned on a few shots per class of a task and tested on the same task, does CAPT reach higher robust "
    "accuracy than the other adversarial prompt-tuning methods, and at what clean cost?",
    "Each method tunes its prompts on *k* shots per class with adversarial examples and is tested on the "
    "same task's test split, clean and under attack.",
    [code('top, where = report.focus("02_in_distribution", rows, S)\n'
          'fig = report.figure(top, S.strong_attack, title=where)\n'
          'plots.save(fig, S.output / "figures" / "in_distribution.png")'),
     code('report.headline(top, S.strong_attack, where)'),
     code('report.reading(top, S.strong_attack, where)'),
     md("## Details"),
     code('trained = rows[rows.method != "zeroshot"]\n'
          'fig = plots.lines(trained[trained.attack == S.strong().label], x="shots", hue="method",\n'
          '                  xlabel="shots per class", ylabel="robust accuracy (%)", title="Robust accuracy vs shots")\n'
          'plots.save(fig, S.output / "figures" / "in_distribution_shots.png")'),
     code('report.detail(rows, S.strong_attack, index=["dataset", "shots"])'),
     code('report.detail(rows, S.strong_attack, index=["dataset", "shots"], metric="clean")')],
    "in_distribution", "in_distribution")

C["03_distribution_shift"] = chapter(
    "03_distribution_shift", "Distribution shift",
    "When the test distribution moves away from the source task, does CAPT keep more robust accuracy than "
    "the other methods?",
    "Prompts tuned on the source task (ImageNet's role) are tested, unchanged, on shifted versions of it "
    "(the roles of ImageNet-V2, -Sketch, -A and -R).",
    [code('shifted, where = report.focus("03_distribution_shift", rows, S)\n'
          'fig = report.figure(shifted, S.strong_attack, title=f"Mean over {where}")\n'
          'plots.save(fig, S.output / "figures" / "distribution_shift.png")'),
     code('report.headline(shifted, S.strong_attack, f"Mean over {where}")'),
     code('report.reading(shifted, S.strong_attack, where)'),
     md("## Details"),
     code('report.detail(rows, S.strong_attack, index="dataset")'),
     code('report.detail(rows, S.strong_attack, index="dataset", metric="clean")')],
    "distribution_shift", "distribution_shift")

C["04_cross_dataset"] = chapter(
    "04_cross_dataset", "Cross-dataset generalisation",
    "Prompts tuned on one task, tested on tasks with new classes and label spaces: does CAPT's consistency "
    "with the frozen CLIP protect robust accuracy where prompt tuning usually loses CLIP's generality?",
    "Prompts tuned on the source task are tested on every other dataset: new classes, new label spaces, "
    "new templates.",
    [code('targets, where = report.focus("04_cross_dataset", rows, S)\n'
          'fig = report.figure(targets, S.strong_attack, title=f"Mean over {where}")\n'
          'plots.save(fig, S.output / "figures" / "cross_dataset.png")'),
     code('report.headline(targets, S.strong_attack, f"Mean over {where}")'),
     code('report.reading(targets, S.strong_attack, where)'),
     md("## Details"),
     code('report.detail(rows, S.strong_attack, index="dataset")'),
     code('report.detail(rows, S.strong_attack, index="dataset", metric="clean")')],
    "cross_dataset", "cross_dataset")

C["05_base_to_new"] = chapter(
    "05_base_to_new", "Base-to-new generalisation",
    "Tuned on half of a task's classes, does CAPT stay robust on the unseen other half?",
    "Beyond the paper: prompts are tuned on the first half of a dataset's classes (base) and tested on base "
    "and on the unseen second half (new), as in CoCoOp. The harmonic mean of base and new accuracy rewards "
    "methods that do not trade one for the other.",
    [code('rows["split"] = rows["dataset"].str.extract(r"\\[(base|new)\\]")[0]\n'
          'rows["task"] = rows["dataset"].str.replace(r"\\[.*\\]", "", regex=True)\n'
          'new, where = report.focus("05_base_to_new", rows, S)\n'
          'fig = report.figure(new, S.strong_attack, title=f"Mean over {where}")\n'
          'plots.save(fig, S.output / "figures" / "base_to_new.png")'),
     code('report.headline(new, S.strong_attack, f"Mean over {where}")'),
     code('report.reading(new, S.strong_attack, where)'),
     md("## Details"),
     code("report.harmonic_means(rows, S.strong_attack)"),
     code('report.detail(rows, S.strong_attack, index=["task", "split"])')],
    "base_to_new", "base_to_new")

C["06_ablations"] = chapter(
    "06_ablations", "Ablations of CAPT",
    "Which of CAPT's parts carry its robustness: the adaptive weight α, the consistency weight λ, which "
    "images the cross-entropy sees, prompt depth and length, the frozen teacher?",
    "Every detail of CAPT that the paper leaves open is a named option here (see the method chapter). Each "
    "variant is trained like CAPT and tested on the source task and on the target tasks.",
    [code('rows["ablation"] = rows["group"] + ": " + rows["variant"]\n'
          "source = rows[rows.dataset == S.source]\n"
          'fig = report.figure(source, S.strong_attack, y="ablation", title="Source task")\n'
          'plots.save(fig, S.output / "figures" / "ablations.png")'),
     code('report.headline(source, S.strong_attack, "Source task, per variant", by=["ablation"])'),
     code('main_keys = {r.key for r in S.runs(methods=["capt"])}  # the variants that are CAPT itself\n'
          "report.ablation_reading(source, S.strong_attack, main_keys)"),
     md("## Details"),
     code('report.headline(rows[rows.dataset != S.source], S.strong_attack, "Mean over the target tasks, per variant",\n'
          '                by=["ablation"])')],
    "ablations", "ablations")

C["07_attack_strength"] = chapter(
    "07_attack_strength", "Attack strength and gradient masking",
    "Are the robust accuracies of this book real, or would a stronger attack take them away?",
    "A defence that only hides gradients looks robust to PGD and falls to stronger or gradient-free attacks. "
    "The tuned models face the attack ladder on a fixed subset of the source task (noise of the same radius, "
    "PGD, the CW margin, APGD, the reference AutoAttack run by torchattacks, and the book's headline attack), "
    "more PGD steps, and growing radii. Robust accuracy must fall with ε, and the headline attack must be "
    "at least as strong as PGD.",
    [code('ladder = rows[rows.part == "strong"]\n'
          'fig = report.figure(ladder, S.strong_attack, title="The attack ladder, source task")\n'
          'plots.save(fig, S.output / "figures" / "attack_ladder.png")'),
     code('headline = ["clean", S.strong().label, S.pgd().label, "autoattack"]\n'
          'report.headline(ladder[ladder.attack.isin(headline)], S.strong_attack, "Source task, the same images")'),
     code('eps = rows[rows.part == "eps"]\nreport.masking_checks(ladder, eps, S.strong_attack)'),
     md("## Details"),
     code('report.detail(ladder, S.strong_attack, index="method", across="metric",\n'
          '              caption="Every attack of the ladder: accuracy (%), mean per method")'),
     code('eps = eps.assign(eps255=(eps["eps"] * 255).round(1))\n'
          'fig = plots.lines(eps[eps.attack != "clean"], x="eps255", xlabel="eps (x 1/255)", title="PGD radius sweep")\n'
          'plots.save(fig, S.output / "figures" / "attack_eps.png")'),
     code('steps = rows[rows.part == "steps"]\n'
          'fig = plots.lines(steps, x="steps", xlabel="PGD steps", logx=True, title="PGD steps")\n'
          'plots.save(fig, S.output / "figures" / "attack_steps.png")')],
    "attack_strength", "attack_strength")

for name, cells in C.items():
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                            "name": "python3"},
                                             "language_info": {"name": "python"}})
    nbformat.write(nb, f"notebooks/{name}.ipynb")
    print("wrote", name)
