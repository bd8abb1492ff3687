"""Moved to ``clipedge.core.images``; this alias of the old import path stays for one release.

The torch-free helpers now live in ``clipedge.core`` (docs/design.md §3). Import from there (or, for the error
type, ``from clipedge import ClipedgeError``).
"""

import warnings

from clipedge.core.images import *  # noqa: F403

warnings.warn("clipedge.images moved to clipedge.core.images; the old path goes away in the next release",
              DeprecationWarning, stacklevel=2)
