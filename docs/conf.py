"""Sphinx configuration of portclone's documentation (https://portclone.readthedocs.io).

Build it as tox and CI do, warnings as errors and every cross-reference checked:

    sphinx-build -W --keep-going -n -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
try:  # autodoc documents the installed portclone (tox -e docs installs it) ...
    import portclone
except ImportError:  # ... or the checkout's sources (without the C extension, if unbuilt)
    sys.path.insert(0, str(ROOT / "src"))
    import portclone

project = "portclone"
author = "the portclone developers"
copyright = "the portclone developers"
release = portclone.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt"]

# "--propagation" in a docstring is an option, not an en dash
smartquotes = False

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# a long signature (clone(), spawn()) gets one parameter a line, with its type and default
python_maximum_signature_line_length = 90
autodoc_preserve_defaults = True

nitpicky = True
# The build must not need the network (tox and CI build it offline, warnings as errors),
# so the standard library's inventory is not fetched and references into the standard
# library have no target here.  These are the only ones ignored; a reference to anything
# of portclone's must resolve.  On Read the Docs, which has the network, they are links.
nitpick_ignore = [
    ("py:mod", "subprocess"),  # api.rst: PIPE/DEVNULL/STDOUT are subprocess's
    ("py:class", "subprocess.Popen"),  # Child's docstring: it works like Popen
    ("py:class", "subprocess.TimeoutExpired"),  # TimeoutExpired's base class
    ("py:class", "os.PathLike"),  # path arguments
]
if os.environ.get("READTHEDOCS") == "True":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {"python": ("https://docs.python.org/3", None)}

html_theme = "furo"
html_title = f"portclone {release}"
html_static_path = ["_static"]
html_css_files = ["portclone.css"]
pygments_style = "friendly"
pygments_dark_style = "monokai"
