"""Class names that every labels file can hold: no line breaks, no control characters, not empty.

Labels files are one class per line (Triton's ``labels.txt``) or one line of separated names (nvinfer's): a
class name with a line break gave Triton's labels.txt 7 lines for 6 classes, so Triton's own classification
output named every later class wrongly. Such a name is refused where it enters (the training data) and again
wherever labels are written, by this one check. Torch-free, so the runtime's writers use it too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from clipedge.core.errors import ClipedgeError

#: Unicode categories no label may contain: controls (\\n, \\r, \\t, NUL, NEL...), line and paragraph separators
FORBIDDEN_CATEGORIES = ("Cc", "Zl", "Zp")


def label_problem(name: str) -> str | None:
    """Why ``name`` cannot be a label (``"contains '\\n'"``, ``"is empty"``), or None."""
    bad = next((c for c in name if unicodedata.category(c) in FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        return f"contains {bad!r}"
    return "is empty" if not name.strip() else None


def check_class_names(names: Iterable[str], source: str, holder: str = "a labels file (one class per line)") -> None:
    """Refuse the first name that ``holder`` could not hold, naming it and ``source`` (the file or folder)."""
    for name in names:
        problem = label_problem(name)
        if problem is not None:
            raise ClipedgeError(f"{source}: class name {name!r} {problem}, which {holder} cannot hold; "
                                "rename that class")
