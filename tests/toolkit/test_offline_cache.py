"""Air-gapped machines: ``--pretrained openai`` and ``--backbone hf-hub:ORG/REPO`` from a copied Hugging Face cache.

The cache is built here the way huggingface_hub lays it out
(``models--ORG--REPO/refs/main`` naming a snapshot, ``snapshots/REV/FILES``),
for the repository open_clip's registry names for ViT-B-32 ``openai``, with
random ViT-B-32 weights in the file format it downloads (fp16 safetensors, to
keep the test's disk and time modest). Each load runs in a fresh Python with
``HF_HUB_OFFLINE=1`` and the hub endpoint pointed at a closed port, so no
request could succeed even on a connected machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from conftest import write_image_folder
from safetensors.torch import save_file

from clipedge.hub_cache import hub_files

REVISION = "3f0ab1c2d4e5f60718293a4b5c6d7e8f90a1b2c3"
HUB_MODEL = "acme/clip-vit-b-32"  # an hf-hub: backbone: open_clip_config.json beside the weights


def snapshot(cache: Path, repo: str) -> Path:
    """An empty snapshot folder of ``repo`` that ``refs/main`` points at."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(REVISION)
    (folder / "snapshots" / REVISION).mkdir(parents=True)
    return folder / "snapshots" / REVISION


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> tuple[Path, float]:
    """A cache holding ViT-B-32 ``openai`` and an hf-hub: ViT-B-32; returns it and a checksum of the weights."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    files = hub_files("ViT-B-32", "openai")
    assert files.repo == "timm/vit_base_patch32_clip_224.openai" and files.weights[0] == "open_clip_model.safetensors"
    torch.manual_seed(7)
    state = {k: v.half().contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}
    weights = snapshot(cache, files.repo) / files.weights[0]
    save_file(state, str(weights))
    hub = snapshot(cache, HUB_MODEL)
    (hub / "open_clip_model.safetensors").symlink_to(weights)  # as the cache's blobs/ links do: no second copy
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"),
              "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}}
    (hub / "open_clip_config.json").write_text(json.dumps(config))
    return cache, float(state["visual.conv1.weight"].double().sum())


#: one fresh interpreter (imports are the slow part) loads both backbones, then asks for two that are not cached
OFFLINE_RUN = """
import json, sys
from click.testing import CliRunner
from clipedge.backbone import load_backbone
from clipedge.cli import main
loaded, refused = {}, {}
for name, tag in (("ViT-B-32", "openai"), ("hf-hub:%(hub)s", None)):
    backbone = load_backbone(name, tag)
    loaded[name] = [float(backbone.model.visual.conv1.weight.double().sum()), backbone.spec.pretrained,
                    backbone.spec.image_size]
for backbone in (["ViT-B-32", "--pretrained", "laion2b_s34b_b79k"], ["hf-hub:acme/not-copied"]):
    result = CliRunner().invoke(main, ["train", sys.argv[1], "--out", sys.argv[2], "--backbone", *backbone])
    refused[backbone[0]] = [result.exit_code, result.stderr, result.exception is None or type(result.exception).__name__]
print(json.dumps({"loaded": loaded, "refused": refused}))
""" % {"hub": HUB_MODEL}


@pytest.fixture(scope="module")
def offline_run(hub_cache, tmp_path_factory) -> tuple[dict, Path]:
    cache, _ = hub_cache
    data = write_image_folder(tmp_path_factory.mktemp("offline") / "data", per_class=3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-c", OFFLINE_RUN, str(data), str(data.parent / "run")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), cache


def test_pretrained_openai_and_hf_hub_load_from_the_cache_offline(hub_cache, offline_run):
    _, checksum = hub_cache
    loaded = offline_run[0]["loaded"]
    assert loaded["ViT-B-32"] == [checksum, "openai", 224]  # the cached weights, not a random init
    assert loaded[f"hf-hub:{HUB_MODEL}"] == [checksum, f"hf-hub:{HUB_MODEL}", 224]


def test_nothing_cached_names_the_repository_and_the_folder(offline_run):
    refused, cache = offline_run[0]["refused"], offline_run[1]
    for backbone, repo in (("ViT-B-32", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"), ("hf-hub:acme/not-copied", "acme/not-copied")):
        exit_code, stderr, exception = refused[backbone]
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert exit_code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
        folder = cache / f"models--{repo.replace('/', '--')}"
        assert f"copy hub repository {repo} (" in errors[0] and f"into {folder};" in errors[0], errors[0]
        assert "(HF_HUB_OFFLINE is set)" in errors[0]
