"""onnxruntime's provider options for clipedge models: the TensorRT execution provider and the CPU fusions."""

from __future__ import annotations

from pathlib import Path

from clipedge.runtime.contract.batch_profile import BatchProfile
from clipedge.runtime.contract.frame_input import FrameInput
from clipedge.runtime.contract.names import INPUT_NAME

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
TENSORRT_WORKSPACE_BYTES = 4 << 30
TENSORRT_OPTIMIZATION_LEVEL = 3  # TensorRT's default; 4-5 search longer for little gain on transformer encoders


def tensorrt_provider_options(cache_dir: str | Path, image_size: int, profile: BatchProfile,
                              fp16_anywhere: bool = False, frame: FrameInput | None = None) -> dict[str, str]:
    """Options for onnxruntime's TensorRT execution provider: one profile over the model's batch range, engine
    and timing caches in ``cache_dir``.

    The profile must come from the model's batch range, never from the caller's batch size: a shape outside
    the cached profile makes onnxruntime rebuild the engine (microsoft/onnxruntime#16889). With
    ``fp16_anywhere`` off, onnxruntime builds a strongly typed TensorRT network (it does whenever neither
    fp16 nor int8 is enabled), which keeps the fp16 export's fp32 head and softmax, and an INT8 model's Q/DQ
    placement, exactly as the export gate checked them. A ``--frame`` model's profile is over its camera frame.
    """
    cache = str(Path(cache_dir))
    sample = frame.sample_shape if frame else (image_size, image_size, 3)

    def shape(batch: int) -> str:
        return f"{INPUT_NAME}:" + "x".join(str(d) for d in (batch, *sample))

    return {
        "trt_fp16_enable": str(fp16_anywhere),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_max_workspace_size": str(TENSORRT_WORKSPACE_BYTES),
        "trt_builder_optimization_level": str(TENSORRT_OPTIMIZATION_LEVEL),
        "trt_profile_min_shapes": shape(profile.min),
        "trt_profile_opt_shapes": shape(profile.opt),
        "trt_profile_max_shapes": shape(profile.max),
    }


def cpu_graph_optimization(precision: str | None) -> str:
    """The onnxruntime graph optimisation level for a model on the CPU provider, by its precision.

    onnxruntime 1.32's CPU layout optimisations (level ALL) crash the process (a segfault, not an exception)
    on fp16 transformer graphs; the basic and extended fusions run them correctly. Returned as the name of
    an ``onnxruntime.GraphOptimizationLevel`` member so this module needs no onnxruntime import.
    """
    return "ORT_ENABLE_EXTENDED" if precision == "fp16" else "ORT_ENABLE_ALL"
