"""Sphinx configuration of the metric_learning documentation site.

Build (offline, warning-free; ``tests/docs_test.py`` runs exactly this)::

  pip install -e ".[docs]"
  sphinx-build -W --keep-going -b html docs docs/_build/html

Pages are MyST Markdown; the API reference is generated from the docstrings by
autosummary. The notebooks in ``notebooks/`` (linked into ``docs/notebooks/``)
are stored without outputs: they are rendered as they are unless
``ML_DOCS_EXECUTE=1`` (set automatically on Read the Docs), which executes
them at the notebooks' small sizes during the build.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # the package, also when it is not pip-installed
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import metric_learning  # noqa: E402  (after the path set-up)

project = "metric_learning"
author = "metric_learning contributors"
copyright = "the metric_learning contributors"  # noqa: A001
release = metric_learning.__version__
version = release

extensions = [
    "myst_nb",                  # MyST Markdown pages and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",      # the docstrings are Google style
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# Offline: no intersphinx, nothing fetched at build time.
templates_path = ["_templates"]
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]
# ".rst" first: autosummary writes its generated stubs (reST) with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
autodoc_mock_imports = ["faiss", "torch"]   # optional backends, never needed to build
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False
add_module_names = False

# -- MyST / notebooks --------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
EXECUTE = os.environ.get("ML_DOCS_EXECUTE", "1" if os.environ.get("READTHEDOCS") else "0")
if EXECUTE == "1":
  os.environ["ML_NOTEBOOK_SMALL"] = "1"
  nb_execution_mode = "force"
  nb_execution_timeout = 600
  nb_execution_raise_on_error = True
else:
  nb_execution_mode = "off"
nb_execution_show_tb = True
nb_merge_streams = True

# -- HTML --------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"metric_learning {release}"
html_theme_options = {
    "show_toc_level": 2,
    # The sidebar expands only the branch of the page shown, two levels deep: each
    # of the ~290 pages otherwise renders the whole tree of every API page (the
    # build took 72 s, 25 s with these two settings) -- and a sidebar listing
    # every function of every module on every page is no help to a reader.
    "collapse_navbar": True,
    "max_navbar_depth": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
    "repository_url": "https://github.com/metric-learning-jax/metric_learning",
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    # No launch buttons: each notebook opens with its own "Open in Colab" badge,
    # pointing at notebooks/ (docs/notebooks/ only links to those files).
}
html_static_path = []
html_last_updated_fmt = None


def _describe_registries(app, what, name, obj, options, lines):
  """A registry dict has no docstring of its own: list its names instead.

  Without this, autodoc shows ``dict``'s own docstring (which is not even valid
  reST) for ``MODELS``, ``EVALUATORS``, ``OPTIMIZERS``, ``SCHEDULES``, ...
  """
  del app, name, options
  if what in ("data", "attribute") and isinstance(obj, dict):
    if obj.__doc__ == dict.__doc__ or "\n".join(lines).startswith("dict() -> new empty"):
      keys = ", ".join(f"``{k}``" for k in obj)
      lines[:] = [f"A registry (``dict``) by name: {keys}.", ""]


def setup(app):
  app.connect("autodoc-process-docstring", _describe_registries)
