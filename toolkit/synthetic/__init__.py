"""Generated images for the embedded default: pretraining pairs for clipedge-tiny and the demo tasks."""

from .scenes import BACKGROUNDS, COLOURS, SHAPES, generate_pairs
from .tasks import TASKS, render_task, write_task

__all__ = ["BACKGROUNDS", "COLOURS", "SHAPES", "TASKS", "generate_pairs", "render_task", "write_task"]
