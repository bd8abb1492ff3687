"""Options that several commands share, declared once so their names, defaults and help cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable

import click


def device_option(default: str = "auto", help_text: str = "auto, cpu, cuda or cuda:N.") -> Callable:
    """``--device``: where PyTorch runs (training, evaluation, the export's references)."""
    return click.option("--device", default=default, show_default=True, help=help_text)


def providers_option(help_text: str = "onnxruntime provider(s) in order of preference, e.g. CPUExecutionProvider "
                                      "(default: best available).") -> Callable:
    """``--provider``, repeatable: the onnxruntime execution providers to try, in order."""
    return click.option("--provider", "providers", multiple=True, help=help_text)


def json_option(help_text: str) -> Callable:
    """``--json``: a machine-readable document (its JSON Schema ships in clipedge/runtime/schemas) instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)
