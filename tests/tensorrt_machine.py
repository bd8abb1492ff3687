"""Whether the real TensorRT tests can run on this machine: TensorRT importable and a CUDA GPU answering."""

from __future__ import annotations

import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.tensorrt_environment import current_gpu, import_cudart


def tensorrt_and_gpu() -> str | None:
    """Why the real TensorRT tests cannot run here, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'clipedge[tensorrt]', or JetPack's TensorRT on a Jetson)"
    try:
        current_gpu(import_cudart())
    except ClipedgeError as error:  # cuda-python absent, no driver or no GPU: the refusal says which
        return str(error)
    return None


MISSING = tensorrt_and_gpu()
#: skips a test where TensorRT or a GPU is absent, saying which
needs_tensorrt_and_gpu = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
