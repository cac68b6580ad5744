"""Sphinx configuration of the samplax documentation site.

Build (warnings are errors, every tutorial is executed)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The tutorials are MyST Markdown notebooks (``docs/tutorials/*.md``), executed by
MyST-NB on every build (``nb_execution_mode = "force"``: no cache to go stale);
a cell that raises, e.g. a failed check against a known value, fails the build.
"""
from __future__ import annotations

import os
import sys

# The checkout's own package comes first (also when another copy is installed).
sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (os.path.abspath(".."), os.environ.get("PYTHONPATH")) if p)  # the notebooks' kernels

import samplax  # noqa: E402

project = "samplax"
author = "the samplax authors"
copyright = "2026, the samplax authors"
release = version = samplax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"

# --- tutorials (MyST-NB) -------------------------------------------------------------------------
nb_execution_mode = "force"          # every build runs every tutorial (no cache is kept)
nb_execution_raise_on_error = True   # a cell that raises fails the build
nb_execution_timeout = 300           # seconds per cell
nb_execution_show_tb = True          # the traceback goes to the build log
# Tutorials kept out of execution (rendered with their code, without outputs): page -> reason.
# tests/test_docs.py fails once the reason is gone (the API exists), so the entry cannot be forgotten.
NOT_EXECUTED = {}  # page -> reason (none now)
nb_execution_excludepatterns = sorted(NOT_EXECUTED)
nb_merge_streams = True
nb_render_markdown_format = "myst"   # markdown outputs (the method table) may hold tables
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# --- API reference (autodoc + napoleon: the docstrings are Google style) ----------------------------
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Fields as bullet lists: entries that name several arguments ("num_chains, num_warmup: run length") stay
# whole (as typed docfields Sphinx would read the first names as a type).
napoleon_use_param = False
napoleon_use_keyword = False
napoleon_use_rtype = False
# "Attributes:" as a field list like "Args:" (autodoc documents the members themselves; attribute
# directives would describe each one twice).
napoleon_custom_sections = [("Attributes", "params_style")]

# --- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"samplax {release}"
html_static_path: list = []
