"""Sphinx extension: every experiment chapter ends with its downloads, the offline stand-in for launch
buttons: the executed notebook the page was built from, and the chapter's results table (its saved
rows, per-image outcomes included), which `capt book` places beside the notebook as
``<chapter>_results.csv``. Both become Sphinx download links (copied into ``_downloads/``), so they work
from a book opened as files. A table this build does not have is named as missing, never a dead link.
"""

from pathlib import Path

from docutils import nodes
from sphinx import addnodes

CHAPTERS = "book/experiments/"  # the folder of the executed chapters (as docnames)
SUFFIX = "_results.csv"  # what `capt book` names a chapter's results table beside its notebook


def _download(docname: str, filename: str, label: str) -> nodes.Node:
    ref = addnodes.download_reference("", "", reftarget=filename, refdoc=docname, refdomain="",
                                      reftype="download", refexplicit=True, refwarn=True)
    ref += nodes.literal(label, label)
    return ref


def _add_downloads(app, doctree) -> None:
    docname = app.env.docname
    source = Path(app.env.doc2path(docname))
    if not docname.startswith(CHAPTERS) or source.suffix != ".ipynb":
        return
    chapter = source.stem
    items = [nodes.list_item("", nodes.paragraph("", "", nodes.Text("the executed notebook: "),
                                                 _download(docname, source.name, source.name)))]
    table = source.with_name(chapter + SUFFIX)
    if table.is_file():
        rows = nodes.paragraph("", "", nodes.Text("its results table (one row per run, dataset and attack, "
                                                  "per-image outcomes included): "),
                               _download(docname, table.name, table.name))
    else:
        rows = nodes.paragraph("", "", nodes.Text(f"its results table: not part of this build (`capt book` "
                                                  f"places it here as {table.name})"))
    items.append(nodes.list_item("", rows))
    section = nodes.section("", nodes.title("", "Downloads"), nodes.bullet_list("", *items),
                            ids=["downloads"], names=["downloads"], classes=["capt-downloads"])
    # the chapter's top section holds the page: the downloads close it
    top = next(iter(doctree.findall(nodes.section)), None)
    (top if top is not None else doctree).append(section)


def setup(app):
    # before Sphinx's download collector (priority 500) reads the document's download references
    app.connect("doctree-read", _add_downloads, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
