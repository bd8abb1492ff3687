"""The other TensorRT route: ONNX Runtime's TensorRT execution provider on the exported ONNX.

No engine file to ship: onnxruntime builds the engine on the first session and
caches it (with its timing cache) in a folder, keyed by model, GPU and
TensorRT version. Torch-free, so the runtime can import it.

Precision: give it the fp16 ONNX with ``trt_fp16_enable`` off. onnxruntime
then creates a *strongly typed* TensorRT network (it does so whenever neither
fp16 nor int8 is enabled, TensorRT 10+), which keeps the fp32 head and softmax
the parity gate checked. ``trt_fp16_enable`` on an fp32 ONNX would let TensorRT
pick fp16 for any layer, softmax included: that is for models without fp32 islands.
"""

from __future__ import annotations

from pathlib import Path

from .batch import BatchProfile
from .metadata import INPUT_NAME

PROVIDER = "TensorrtExecutionProvider"
WORKSPACE_BYTES = 4 << 30
OPTIMIZATION_LEVEL = 3


def _shape(batch: int, image_size: int) -> str:
    return f"{INPUT_NAME}:{batch}x{image_size}x{image_size}x3"


def tensorrt_provider_options(cache_dir: str | Path, image_size: int, profile: BatchProfile,
                              fp16_anywhere: bool = False) -> dict[str, str]:
    """Provider options for ``TensorrtExecutionProvider``: one profile over the batch range, engine + timing cache.

    ``fp16_anywhere`` lets TensorRT run any layer in fp16 (only sensible for an fp32 ONNX when speed
    matters more than the parity figures); off, the precisions written in the ONNX are kept.
    """
    cache = str(Path(cache_dir))
    return {
        "trt_fp16_enable": str(fp16_anywhere),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_max_workspace_size": str(WORKSPACE_BYTES),
        "trt_builder_optimization_level": str(OPTIMIZATION_LEVEL),
        "trt_profile_min_shapes": _shape(profile.min, image_size),
        "trt_profile_opt_shapes": _shape(profile.opt, image_size),
        "trt_profile_max_shapes": _shape(profile.max, image_size),
    }


def tensorrt_providers(cache_dir: str | Path, image_size: int, profile: BatchProfile,
                       fp16_anywhere: bool = False) -> list:
    """``providers=`` for ``onnxruntime.InferenceSession``: TensorRT first, CUDA and CPU for what it leaves."""
    options = tensorrt_provider_options(cache_dir, image_size, profile, fp16_anywhere)
    return [(PROVIDER, options), "CUDAExecutionProvider", "CPUExecutionProvider"]
