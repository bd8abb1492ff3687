"""What loading a backbone tells the user: never open_clip's "initialized randomly" when clipedge loads the weights."""

import logging
import warnings

import pytest

from clipedge.backbone import load_backbone


@pytest.mark.parametrize(("name", "pretrained"), [("clipedge-tiny", None), ("test-tiny-vit", "none")])
def test_no_random_init_line_and_the_root_logger_left_as_found(caplog, name, pretrained):
    root = logging.getLogger()
    handlers, filters = list(root.handlers), list(root.filters)
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        load_backbone(name, pretrained)
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert root.handlers == handlers and root.filters == filters
    # --pretrained none still says so, in clipedge's own words
    assert any("random weights (--pretrained none)" in str(w.message) for w in warned) == (pretrained == "none")


def test_other_warnings_during_the_load_still_reach_the_user(caplog, monkeypatch):
    import open_clip

    create = open_clip.create_model_and_transforms

    def noisy(*args, **kwargs):
        logging.warning("something open_clip wants the user to read")
        return create(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", noisy)
    with caplog.at_level(logging.WARNING):
        load_backbone("clipedge-tiny")
    assert [r.getMessage() for r in caplog.records] == ["something open_clip wants the user to read"]
