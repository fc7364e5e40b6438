"""Sphinx configuration of jaxlab's documentation site (``make docs``).

The site is built offline: no intersphinx inventories are fetched, and the
theme's static files ship with the package. MathJax is only loaded by the
reader's browser.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's jaxlab, also without an editable install
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # importing the modules must not claim an accelerator

import jaxlab

project = "jaxlab"
author = "jaxlab authors"
copyright = "jaxlab authors"
release = version = jaxlab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
suppress_warnings: list[str] = []

# autodoc: each API page is one ``automodule`` whose members are the package's ``__all__``.
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "member-order": "alphabetical",
}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # Flax/optax base-class docstrings are not ours
autoclass_content = "class"

# napoleon: Google style (DESIGN.md: summary, Args, Returns, References).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_custom_sections = [("References", "notes_style"), ("Reference", "notes_style")]

# MyST: ``$...$`` / ``$$...$$`` math and ``:::`` fences in the markdown pages.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = f"jaxlab {release}"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
html_static_path: list[str] = []
