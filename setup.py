"""Packaging: four top-level folders form the one import package ``clipedge`` (DESIGN.md §2)."""

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

# The runtime needs only these; `clipedge predict` and `clipedge bench` run on them alone.
RUNTIME_REQUIRES = ["numpy", "pillow", "onnxruntime", "click", "tqdm"]
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
    package_data={"clipedge": ["model_configs/*.json", "weights/*.safetensors", "weights/*.md"]},
    install_requires=[
        "torch",
        "open_clip_torch>=2.24",
        "onnx",
        "onnxscript",  # torch.onnx.export(dynamo=True) needs it; torch does not declare it
        "safetensors",
        "matplotlib",
        *RUNTIME_REQUIRES,
    ],
    extras_require={
        # the Triton integration test runs in CI, so the test extra brings the server
        "test": ["pytest", "pytest-timeout", "scikit-image", "opencv-python-headless", "polygraphy", *SERVE_REQUIRES],
        "serve": SERVE_REQUIRES,
        "gpu": ["onnxruntime-gpu"],
        "tensorrt": ["tensorrt", "cuda-python"],
    },
    entry_points={"console_scripts": ["clipedge=clipedge.cli:main"]},
)
