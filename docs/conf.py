"""Sphinx configuration of robustops' API reference: autodoc reads the docstrings
(Google style, through napoleon). Build it with ``make docs`` (the ``docs`` extra:
``pip install -e .[docs]``); warnings are errors."""

from __future__ import annotations

import os
import sys

# the checkout's robustops (an installed one works too; an editable install is both)
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import robustops  # noqa: E402

project = "robustops"
author = "the robustops authors"
copyright = "the robustops authors"
release = version = robustops.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]

# Google-style docstrings (Args:, Returns:, Raises:)
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes: sections as fields of their class, not as attribute entries that would
# repeat the ones autodoc finds itself
napoleon_use_ivar = True
# the modules' "Shape:" sections (as torch.nn's docstrings have them)
napoleon_custom_sections = ["Shape"]

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_member_order = "bysource"
# the signature shows the types; the descriptions say the rest
autodoc_typehints = "signature"
autoclass_content = "class"

html_theme = "alabaster"
html_title = f"robustops {release}"


# The docstrings of robustops/ops/*.py (being refactored in issue 17; their
# docstrings follow in Google style) write math as plain text: |x| for an absolute
# value, * for a product or an unpacked tuple. reStructuredText would read |x| as a
# substitution and * as emphasis, so outside ``literals`` both are escaped there.
# Remove this once those docstrings mark their math up as the others do.
_PLAIN_TEXT_MODULES = ("robustops.ops",)


def _escape_plain_text_math(app, what, name, obj, options, lines):
    module = getattr(obj, "__module__", None) or (name if what == "module" else "")
    if not module.startswith(_PLAIN_TEXT_MODULES):
        return
    for i, line in enumerate(lines):
        parts = line.split("``")
        for j in range(0, len(parts), 2):  # the even parts lie outside ``literals``
            parts[j] = parts[j].replace("|", r"\|").replace("*", r"\*")
        lines[i] = "``".join(parts)


def setup(app):
    app.connect("autodoc-process-docstring", _escape_plain_text_math)
