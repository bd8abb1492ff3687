"""The generated tasks the demo and the few-shot benchmark run on: reproducible, and each a real shift."""

import numpy as np
import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.synthetic import TASKS, render_task


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_is_reproducible_from_its_seed_and_covers_its_classes(name):
    classes, images, labels = render_task(name, images_per_class=3, seed=4)
    again = render_task(name, images_per_class=3, seed=4)[1]
    assert classes == TASKS[name][0] and images.dtype == np.uint8 and images.shape == (3 * len(classes), 64, 64, 3)
    assert np.array_equal(images, again) and not np.array_equal(images, render_task(name, 3, seed=5)[1])
    assert np.array_equal(np.bincount(labels), np.full(len(classes), 3))


def test_the_dusk_shift_is_dimmer_than_the_scenes_it_shifts():
    """shapes-dusk draws the pretraining scenes (as the un-shifted control does), then dims, blurs and grains them."""
    dusk = render_task("shapes-dusk", images_per_class=20, seed=0)[1].astype(np.float32)
    control = render_task("colours", images_per_class=25, seed=0)[1].astype(np.float32)
    assert dusk.mean() < 0.9 * control.mean()


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(ClipedgeError, match="--task nope: unknown task; expected one of .*shapes-dusk"):
        render_task("nope", 1, 0)
