"""The 11 few-shot datasets in CoOp's layout (``DATASET.ROOT/<folder>/...``), read into train/val/test lists.

Folder, image-folder and split-file names follow CoOp's ``datasets/*.py``
(KaiyangZhou/CoOp); the prompt of each is CoOp's single template
(``trainers/zsclip.py``). Nine datasets ship a ``split_zhou_*.json``
(``{"train"|"val"|"test": [[path under the image folder, label, class name], ...]}``).
ImageNet is read from ``images/train`` and ``images/val`` with
``classnames.txt``; FGVCAircraft from ``variants.txt`` and
``images_variant_{train,val,test}.txt``.

One deliberate difference: CoOp validates ImageNet on its test set (the
official val images). Here ImageNet's val images are held out of its train
folder instead (``IMAGENET_VAL_PER_CLASS`` per class, seeded), because the
test split decides nothing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from clipedge.core.errors import ClipedgeError

Row = tuple[str, int, str]  # path relative to the dataset folder, label, class name
IMAGENET_VAL_PER_CLASS = 4


@dataclass(frozen=True)
class CoOpDataset:
    name: str  # CoOp's dataset name (its config and template key)
    folder: str  # under DATASET.ROOT
    image_dir: str  # the split file's paths are relative to this folder ("" = the dataset folder)
    split_file: str | None  # None: read by ``reader``
    template: str
    reader: str = "split_zhou"

    def required(self, root: Path) -> list[Path]:
        """The files that must exist for this dataset to be read."""
        base = root / self.folder
        if self.reader == "imagenet":
            return [base / "classnames.txt", base / "images" / "train", base / "images" / "val"]
        if self.reader == "aircraft":
            return [base / "variants.txt", *(base / f"images_variant_{s}.txt" for s in ("train", "val", "test"))]
        return [base / self.split_file]

    def read(self, root: Path) -> dict[str, list[Row]]:
        """train, val and test rows; raises ClipedgeError naming what is missing or malformed."""
        missing = [path for path in self.required(root) if not path.exists()]
        if missing:
            raise ClipedgeError(f"{self.name}: {missing[0]} not found (CoOp layout: see benchmarks/coop_datasets.py)")
        return {"split_zhou": _read_split_zhou, "imagenet": _read_imagenet, "aircraft": _read_aircraft}[self.reader](self, root / self.folder)


DATASETS = {d.name: d for d in (
    CoOpDataset("ImageNet", "imagenet", "images", None, "a photo of a {}.", reader="imagenet"),
    CoOpDataset("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", "a photo of a {}."),
    CoOpDataset("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json", "a photo of a {}, a type of pet."),
    CoOpDataset("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json", "a photo of a {}."),
    CoOpDataset("OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", "a photo of a {}, a type of flower."),
    CoOpDataset("Food101", "food-101", "images", "split_zhou_Food101.json", "a photo of {}, a type of food."),
    CoOpDataset("FGVCAircraft", "fgvc_aircraft", "images", None, "a photo of a {}, a type of aircraft.", reader="aircraft"),
    CoOpDataset("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json", "a photo of a {}."),
    CoOpDataset("DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json", "{} texture."),
    CoOpDataset("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json", "a centered satellite photo of {}."),
    CoOpDataset("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "a photo of a person doing {}."),
)}
#: the names the papers' tables use
ALIASES = {"Flowers102": "OxfordFlowers", "DTD": "DescribableTextures"}


def dataset_named(name: str) -> CoOpDataset:
    key = ALIASES.get(name, name)
    if key not in DATASETS:
        raise ClipedgeError(f"--datasets {name}: unknown dataset; expected some of {', '.join(DATASETS)}")
    return DATASETS[key]


def _read_split_zhou(dataset: CoOpDataset, base: Path) -> dict[str, list[Row]]:
    path = base / dataset.split_file
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        return {split: [(str(Path(dataset.image_dir) / p), int(label), str(name)) for p, label, name in content[split]]
                for split in ("train", "val", "test")}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ClipedgeError(f"{dataset.name}: {path} is not a CoOp split file ({type(error).__name__}: {error})") from None


def _read_imagenet(dataset: CoOpDataset, base: Path) -> dict[str, list[Row]]:
    names = {}
    for line in (base / "classnames.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            folder, _, name = line.strip().partition(" ")
            names[folder] = name

    def listed(split: str) -> list[Row]:
        folders = sorted(p.name for p in (base / "images" / split).iterdir() if p.is_dir())
        unnamed = [f for f in folders if f not in names]
        if unnamed:
            raise ClipedgeError(f"ImageNet: {base / 'classnames.txt'} has no name for folder {unnamed[0]}")
        return [(f"images/{split}/{folder}/{image.name}", label, names[folder])
                for label, folder in enumerate(folders)
                for image in sorted((base / "images" / split / folder).iterdir()) if not image.name.startswith(".")]

    train, val = [], []
    by_class: dict[int, list[Row]] = {}
    for row in listed("train"):
        by_class.setdefault(row[1], []).append(row)
    for label, rows in sorted(by_class.items()):
        random.Random(f"imagenet-val:{label}").shuffle(rows)
        val += rows[:IMAGENET_VAL_PER_CLASS]
        train += rows[IMAGENET_VAL_PER_CLASS:]
    return {"train": train, "val": val, "test": listed("val")}


def _read_aircraft(dataset: CoOpDataset, base: Path) -> dict[str, list[Row]]:
    classes = [line.strip() for line in (base / "variants.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    label_of = {name: label for label, name in enumerate(classes)}

    def listed(split: str) -> list[Row]:
        rows = []
        for line in (base / f"images_variant_{split}.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                image, _, name = line.strip().partition(" ")
                if name not in label_of:
                    raise ClipedgeError(f"FGVCAircraft: images_variant_{split}.txt names {name!r}, not in variants.txt")
                rows.append((f"{dataset.image_dir}/{image}.jpg", label_of[name], name))
        return rows

    return {split: listed(split) for split in ("train", "val", "test")}
