"""clipedge: few-shot CLIP classifiers, exported for NVIDIA edge GPUs.

This module stays free of torch so that ``clipedge.runtime`` (which lives
under this package) can be imported where only numpy and an inference
backend are installed. The training API is resolved lazily on first use.
"""

from importlib import import_module
from typing import Any

from clipedge.core.errors import ClipedgeError

from .version import __version__

_LAZY_ATTRIBUTES = {
    "train": "clipedge.training",
    "TrainConfig": "clipedge.training",
    "load_run": "clipedge.run_dir",
    "Run": "clipedge.run_dir",
    "evaluate": "clipedge.evaluation",
    "load_backbone": "clipedge.backbone",
}

__all__ = ["ClipedgeError", "__version__", *_LAZY_ATTRIBUTES]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'clipedge' has no attribute {name!r}")
    return getattr(import_module(module_name), name)
