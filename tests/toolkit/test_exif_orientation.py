"""EXIF orientation: a phone photo gives the same pixels in training, in predict and in the exported model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import clipedge
from clipedge.cli import main
from clipedge.core.images import DecodeOptions

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--views", "1", "--epochs", "1"]
EXIF_ORIENTATION = 0x0112


STORED_AS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def photo() -> Image.Image:
    from skimage import data as skimage_data

    return Image.fromarray(skimage_data.chelsea()).resize((150, 100), Image.Resampling.LANCZOS)


def write_orientations(folder: Path, upright: Image.Image) -> list[Path]:
    """The same photograph as a camera would write it in each of the 8 EXIF orientations."""
    folder.mkdir(parents=True)
    paths = []
    for orientation, transpose in STORED_AS.items():
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        stored = upright if transpose is None else upright.transpose(transpose)
        stored.save(folder / f"orientation{orientation}.jpg", quality=98, subsampling=0, exif=exif.tobytes())
        paths.append(folder / f"orientation{orientation}.jpg")
    return paths


def test_the_8_orientations_give_the_same_training_features(tmp_path):
    import torch

    from clipedge.backbone import load_backbone
    from clipedge.data import Sample
    from clipedge.features import extract_features

    torch.set_num_threads(1)
    samples = [Sample(p, p.name, 0) for p in write_orientations(tmp_path / "exif", photo())]
    backbone = load_backbone("clipedge-tiny")

    def similarity_to_upright(decoding: DecodeOptions) -> np.ndarray:
        features = torch.nn.functional.normalize(extract_features(backbone, samples, progress=False,
                                                                  decoding=decoding).features, dim=-1)
        return (features @ features[0]).numpy()

    assert similarity_to_upright(DecodeOptions()).min() > 0.995  # JPEG noise only
    assert similarity_to_upright(DecodeOptions(exif_transpose=False)).min() < 0.99  # the test can tell


@pytest.fixture(scope="module")
def orientation_model(tmp_path_factory):
    """clipedge-tiny with CLIP-Adapter trained to tell upright crops of the photograph from sideways ones: a model
    that notices when orientation is lost."""
    root = tmp_path_factory.mktemp("orientation")
    upright = photo()
    rng = np.random.default_rng(0)
    for index in range(12):
        left, top = rng.integers(0, 50), rng.integers(0, 20)
        crop = upright.crop((left, top, left + 100, top + 80))
        (root / "data" / "upright").mkdir(parents=True, exist_ok=True)
        (root / "data" / "sideways").mkdir(parents=True, exist_ok=True)
        crop.save(root / "data" / "upright" / f"{index}.png")
        crop.transpose(Image.Transpose.ROTATE_90 if index % 2 else Image.Transpose.ROTATE_270).save(
            root / "data" / "sideways" / f"{index}.png")
    clipedge.train(root / "data", root / "run", method="clip-adapter", shots=16, views=2, recipe="fast", progress=False)
    from clipedge.export import export_model

    return export_model(root / "run", parity_count=8).artifact, root


def test_the_8_orientations_give_the_same_prediction_in_predict(orientation_model):
    model, root = orientation_model
    paths = write_orientations(root / "exif", photo())
    runner = CliRunner()

    def predictions(*options: str) -> tuple[list[str], np.ndarray]:
        result = runner.invoke(main, ["predict", str(model), *map(str, paths), "--json", "--top-k", "2", *options])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["predictions"]
        probs = np.array([[dict(zip(r["labels"], r["scores"]))[name] for name in ("sideways", "upright")] for r in rows])
        return [r["label"] for r in rows], probs

    labels, probs = predictions()
    assert labels == ["upright"] * 8
    assert np.abs(probs - probs[0]).max() < 0.05  # JPEG noise only (measured: 0.025)
    stored_labels, stored_probs = predictions("--no-exif-transpose")
    assert stored_labels[5] == "sideways"  # orientation 6: stored rotated by a quarter turn
    assert np.abs(stored_probs - stored_probs[0]).max() > 0.3  # the test can tell (measured: 0.56)


def test_exif_choice_travels_from_training_to_the_model(orientation_model, tmp_path):
    from clipedge.runtime import Classifier
    from clipedge.runtime.contract import read_contract

    model, root = orientation_model
    classifier = Classifier(model)
    assert classifier.metadata["exif_transpose"] == "true" and classifier.decoding.exif_transpose
    assert read_contract(classifier.metadata, model).exif_transpose
    assert not Classifier(model, exif_transpose=False).decoding.exif_transpose
    off = tmp_path / "off"
    assert classifier.decoding.pixel_limit == Image.MAX_IMAGE_PIXELS  # the limit training used, recorded
    result = CliRunner().invoke(main, ["train", str(root / "data"), "--out", str(off), "--method", "zero-shot",
                                       "--no-exif-transpose", "--max-image-pixels", "150000000"])
    assert result.exit_code == 0, result.output
    assert json.loads((off / "clipedge.json").read_text())["decoding"] == {"exif_transpose": False,
                                                                          "max_image_pixels": 150_000_000}
    from clipedge.export.metadata import model_metadata

    metadata = model_metadata(clipedge.load_run(off), "fp32", False, None, 18)
    assert metadata["exif_transpose"] is False and metadata["max_image_pixels"] == 150_000_000


def test_camera_frames_are_never_transposed(orientation_model):
    from clipedge.runtime import Classifier

    model, root = orientation_model
    sideways = np.ascontiguousarray(np.asarray(photo().transpose(Image.Transpose.ROTATE_90)))
    classifier = Classifier(model)
    assert classifier(sideways).label == "sideways"  # an array has no EXIF: used exactly as given
