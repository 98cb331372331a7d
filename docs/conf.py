"""Sphinx configuration: build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``.

No network is needed: no intersphinx, MathJax is loaded by the reader's browser.
"""

import os
import sys

# The source tree (arrayopt/ plus backends/, mounted as arrayopt.backends by
# arrayopt/__init__.py) is importable without installing.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import arrayopt  # noqa: E402

project = "arrayopt"
author = "arrayopt contributors"
copyright = "arrayopt contributors"
release = arrayopt.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
# Signatures show annotations as written; several name optional libraries.
autodoc_type_aliases: dict[str, str] = {}
autodoc_mock_imports = ["cupy", "cupyx", "mpi4py", "numba", "torch"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# Type hints name objects (numpy.ndarray, typing helpers, private aliases) that have
# no page here and, without intersphinx, could not be linked anyway.
nitpicky = False

html_theme = "furo"
html_title = f"arrayopt {release}"
