"""TensorRT and cuda-python on this machine: importing them, the one-line install hint, and the GPU's identity.

Shared by the engine build and the TensorRT backend, so both say the same thing when something is missing and
both identify the GPU the same way: through cuda-python's runtime bindings, never torch (a Jetson in the field
has TensorRT and no PyTorch).
"""

from __future__ import annotations

import platform
from typing import Any

from clipedge.core.errors import ClipedgeError


def install_hint() -> str:
    """What to install, for this platform: JetPack's own TensorRT on a Jetson (aarch64), the wheels elsewhere."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return ("on a Jetson use JetPack's TensorRT: create the venv with `python3 -m venv --system-site-packages`, "
                "then pip install 'cuda-python>=12.6,<13' (docs/gpu.md)")
    return "pip install 'clipedge[tensorrt]' (tensorrt, cuda-python) on a machine with an NVIDIA GPU"


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise ClipedgeError(f"TensorRT is not installed; {install_hint()}") from None
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise ClipedgeError(f"cuda-python is not installed; {install_hint()}") from None
    return runtime


def cuda_check(result: Any) -> Any:
    """cuda-python returns (error, *values); raise on any error, return the value(s)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ClipedgeError(f"CUDA call failed: {error}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


#: cudaError_t's cudaErrorInsufficientDriver: no driver, or one older than cuda-python's CUDA runtime. With a driver
#: present the likely case is cuda-python 13 (which needs a CUDA 13 driver, R580 or newer) beside a CUDA 12 driver,
#: JetPack 6's among them (NVIDIA/cutlass#2866).
INSUFFICIENT_DRIVER = 35
NO_GPU = "no CUDA GPU is visible; TensorRT engines are built and run on the GPU that runs them"


def current_gpu(cudart: Any) -> dict[str, str]:
    """Name and compute capability ("major.minor") of the current CUDA device; engines run only on its architecture."""
    error, count = cudart.cudaGetDeviceCount()
    if int(error) == INSUFFICIENT_DRIVER:
        asked, driver = cudart.cudaDriverGetVersion()  # 0 where no driver is installed at all
        if int(asked) == 0 and driver:
            raise ClipedgeError(f"CUDA: this driver (CUDA {cuda_version(driver)}) is older than cuda-python's CUDA "
                                "runtime (cudaErrorInsufficientDriver); on a CUDA 12 driver (JetPack 6) install "
                                "'cuda-python>=12.6,<13', since cuda-python 13 needs a CUDA 13 driver (R580+)")
    if int(error) != 0 or count == 0:
        raise ClipedgeError(NO_GPU)
    properties = cuda_check(cudart.cudaGetDeviceProperties(cuda_check(cudart.cudaGetDevice())))
    name = properties.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return {"gpu_name": name.rstrip("\x00").strip(), "compute_capability": f"{properties.major}.{properties.minor}"}


def cuda_version(encoded: int) -> str:
    """"major.minor" of a CUDA version as cudaDriverGetVersion encodes it (1000·major + 10·minor)."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"
