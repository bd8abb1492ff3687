"""Packaging: four top-level folders form the one import package ``clipedge`` (docs/design.md §3)."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
FOLDERS = {
    "clipedge": "toolkit",
    "clipedge.export": "export",
    "clipedge.calibration": "calibration",
    "clipedge.runtime": "runtime",
}


def discover_packages() -> dict:
    """Map every package under the four folders (sub-packages included) to its directory."""
    mapping = {}
    for package, folder in FOLDERS.items():
        for init in sorted((HERE / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(HERE / folder)
            name = ".".join([package, *relative.parts])
            mapping[name] = init.parent.relative_to(HERE).as_posix()
    return mapping


VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "toolkit/version.py").read_text()).group(1)
PACKAGE_DIR = discover_packages()

X86 = "platform_machine == 'x86_64' or platform_machine == 'AMD64'"

# The runtime needs only these; `clipedge predict` and `clipedge bench` run on them alone. ftfy and regex: the
# torch-free CLIP tokenizer (clipedge.runtime.text) cleans and splits text exactly as open_clip does with them.
RUNTIME_REQUIRES = ["numpy", "pillow", "onnxruntime", "click", "tqdm", "ftfy", "regex"]
# `clipedge serve` / `clipedge repository` and grpc:// / http:// models: the wheel bundles tritonserver 2.51 with its
# python backend (CPU-capable) and pins numpy<2, which every other dependency here accepts (opencv resolves to 4.x).
SERVE_REQUIRES = ["nvidia-pytriton==0.7.0", "tritonclient[grpc,http]"]

setup(
    name="clipedge",
    version=VERSION,
    description="Few-shot CLIP classifiers (CLIP-Adapter family) exported to ONNX and TensorRT for edge GPUs",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=sorted(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"clipedge": ["model_configs/*.json", "weights/*.safetensors", "weights/*.md"],
                  "clipedge.runtime.schemas": ["*.schema.json"],
                  "clipedge.runtime.text": ["*.txt.gz"]},
    install_requires=[
        # Checked by installing: torch 2.6.0 trains (CPU fused AdamW) and evaluates, but its dynamo ONNX exporter
        # fails on the fused model (numel() on symbolic sizes); 2.14.1 exports. Versions between were not checked.
        "torch>=2.14",
        # create_model_and_transforms(weights_only=...) arrived in 3.0.0; 2.29-2.32 raise TypeError (checked).
        "open_clip_torch>=3.0",
        "onnx",
        "onnxscript",  # torch.onnx.export(dynamo=True) needs it; torch does not declare it
        "safetensors",
        "matplotlib",
        "jsonschema",  # a run's manifest is validated against its shipped schema on every load (clipedge.run_integrity)
        *RUNTIME_REQUIRES,
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "scikit-image", "opencv-python-headless", "polygraphy", "onnx-graphsurgeon",
                 "jsonschema", *SERVE_REQUIRES],  # the Triton integration test runs in CI: the test extra brings the server
        "serve": SERVE_REQUIRES,
        # PyPI's onnxruntime-gpu and tensorrt wheels are x86_64 (and Windows AMD64) builds; on a Jetson (aarch64)
        # they come from JetPack and NVIDIA's Jetson wheel index instead (README: GPU and Jetson), so the markers
        # keep pip from trying to build them there. cuda-python publishes aarch64 wheels.
        "gpu": [f"onnxruntime-gpu; {X86}"],
        "tensorrt": [f"tensorrt; {X86}", "cuda-python", "onnx"],
    },
    entry_points={"console_scripts": ["clipedge=clipedge.cli:main"]},
)
