"""Sphinx extension: each inline or linked script once per page.

Sphinx 7.4 keeps a script added with ``app.add_js_file(None, body=...)`` after the builder started
(sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) twice: once as given, once
re-added from the registry as filename ``''``. The page then declares the ``const`` twice and every page
throws ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` (tests/test_browser.py).
"""


def _once(app, pagename, templatename, context, doctree):
    seen, keep = set(), []
    for js in context.get("script_files", []):
        key = (js.filename or "", js.priority, tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            keep.append(js)
    context["script_files"] = keep  # a new list: the builder's own stays as it is


def setup(app):
    app.connect("html-page-context", _once, priority=900)  # after the themes add their per-page scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
