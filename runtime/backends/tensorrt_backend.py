"""TensorRT backend (TensorRT 10 Python API + cuda-python): pinned host buffers, one stream, optional CUDA graph.

An engine runs only on the GPU architecture (compute capability) and the exact
TensorRT version it was built with. The JSON sidecar ``clipedge export
--format engine`` writes next to it (``model.engine.json``) records both, and
a mismatch is refused in one line before TensorRT would fail obscurely. A
different GPU name with the same compute capability only warns: TensorRT
runs such engines, possibly with less-than-optimal kernels.

Buffers are allocated once for the largest batch the engine accepts: pinned
host memory (``cudaMallocHost``) so copies are true async DMA, device memory
bound to the execution context by address. Each call copies in, runs
``execute_async_v3`` and copies out on one stream, then synchronises. With
``cuda_graph=True`` those three steps are captured once into a CUDA graph and
replayed as one launch; a graph fixes the input shape, so a call with another
batch size recaptures.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np
from clipedge.errors import ClipedgeError

from ..contract import INPUT_NAME, encode_metadata, read_sidecar
from .base import Backend

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'clipedge[tensorrt]' (tensorrt, cuda-python) on a machine with an NVIDIA GPU"


def check_compatible(engine: Path, sidecar: dict[str, Any], gpu_name: str, compute_capability: str,
                     tensorrt_version: str) -> None:
    """Refuse an engine built for another GPU architecture or TensorRT version, naming both sides."""
    built_gpu, built_cc = sidecar.get("gpu_name", "an unrecorded GPU"), sidecar.get("compute_capability")
    built_trt = sidecar.get("tensorrt_version")
    if built_cc != compute_capability:
        raise ClipedgeError(
            f"model {engine}: engine was built for {built_gpu} (compute {built_cc}) but this GPU is {gpu_name} "
            f"(compute {compute_capability}); rebuild it here with `clipedge export RUN --format engine`")
    if built_trt != tensorrt_version:
        raise ClipedgeError(
            f"model {engine}: engine was built with TensorRT {built_trt} but TensorRT {tensorrt_version} is installed; "
            f"rebuild it here with `clipedge export RUN --format engine`")
    if built_gpu != gpu_name:
        log.warning("model %s: built on %s, running on %s (same compute capability %s)", engine, built_gpu, gpu_name,
                    compute_capability)


def _check(result: Any) -> Any:
    """cuda-python returns (error, *values); raise on any error, return the value(s)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ClipedgeError(f"CUDA call failed: {error}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _import() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:  # cuda-python before 12.6 exposed the runtime bindings as cuda.cudart
            import tensorrt as trt
            from cuda import cudart
        except ImportError:
            raise ClipedgeError(f"TensorRT engines need tensorrt and cuda-python: {INSTALL_HINT}") from None
    return trt, cudart


def current_gpu(cudart: Any) -> tuple[str, str]:
    """(name, "major.minor") of the current CUDA device."""
    properties = _check(cudart.cudaGetDeviceProperties(_check(cudart.cudaGetDevice())))
    name = properties.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return name.rstrip("\x00").strip(), f"{properties.major}.{properties.minor}"


class TensorRTBackend(Backend):
    """A deserialised TensorRT engine with its execution context, stream and buffers."""

    def __init__(self, path: Path, cuda_graph: bool = False):
        trt, cudart = _import()
        self.trt, self.cudart = trt, cudart
        sidecar = read_sidecar(path)
        check_compatible(path, sidecar, *current_gpu(cudart), trt.__version__)
        self.metadata = encode_metadata(sidecar)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ClipedgeError(f"model {path}: TensorRT could not deserialise the engine (see its log above)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names:
            raise ClipedgeError(f"model {path}: engine has no input named {INPUT_NAME!r} (tensors: {', '.join(names)})")
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
        self.input_shape = tuple(d if d >= 0 else None for d in shape)
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME))).name
        if shape[0] >= 0:  # built for a fixed batch
            self.batch_range = (shape[0], shape[0])
        else:
            low, _, high = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
            self.batch_range = (int(low[0]), int(high[0]))
        self.num_classes = int(self.engine.get_tensor_shape("probs")[-1]) if "probs" in self.output_names else None
        self.stream = _check(cudart.cudaStreamCreate())
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        self._allocate(self.batch_range[1])
        self.cuda_graph = cuda_graph
        self._graph: Any = None
        self._graph_batch = 0
        self.name = "tensorrt+cudagraph" if cuda_graph else "tensorrt"
        log.info("running %s with TensorRT %s", path.name, trt.__version__)

    def _allocate(self, max_batch: int) -> None:
        """Pinned host and device buffers for the largest batch, bound to the context once."""
        for name in [INPUT_NAME, *self.output_names]:
            shape = [max_batch if d < 0 else d for d in self.engine.get_tensor_shape(name)]
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            pointer = _check(self.cudart.cudaMallocHost(nbytes))
            self.host[name] = np.frombuffer((ctypes.c_byte * nbytes).from_address(pointer), dtype=dtype).reshape(shape)
            self.device[name] = _check(self.cudart.cudaMalloc(nbytes))
            self.context.set_tensor_address(name, self.device[name])

    def _enqueue(self, batch: int) -> None:
        """Copy in, run, copy out, all queued on the stream."""
        kind = self.cudart.cudaMemcpyKind
        host_in = self.host[INPUT_NAME][:batch]
        _check(self.cudart.cudaMemcpyAsync(self.device[INPUT_NAME], host_in.ctypes.data, host_in.nbytes,
                                           kind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):  # TensorRT takes the raw stream handle
            raise ClipedgeError("TensorRT failed to enqueue the engine (see its log above)")
        for name in self.output_names:
            host_out = self.host[name][:batch]
            _check(self.cudart.cudaMemcpyAsync(host_out.ctypes.data, self.device[name], host_out.nbytes,
                                               kind.cudaMemcpyDeviceToHost, self.stream))

    def _capture(self, batch: int) -> None:
        """Record one enqueue for this batch size into a CUDA graph (after one ordinary run, as TensorRT asks)."""
        self._release_graph()
        self._enqueue(batch)
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(self.cudart.cudaStreamBeginCapture(self.stream, mode))
        self._enqueue(batch)
        graph = _check(self.cudart.cudaStreamEndCapture(self.stream))
        self._graph = _check(self.cudart.cudaGraphInstantiate(graph, 0))
        _check(self.cudart.cudaGraphDestroy(graph))
        self._graph_batch = batch

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(images)
        self.host[INPUT_NAME][:batch] = images
        if not self.context.set_input_shape(INPUT_NAME, images.shape):
            raise ClipedgeError(f"TensorRT refused input shape {list(images.shape)} (batch range {self.batch_range})")
        if self.cuda_graph:
            if self._graph_batch != batch:
                self._capture(batch)
            _check(self.cudart.cudaGraphLaunch(self._graph, self.stream))
        else:
            self._enqueue(batch)
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return {name: self.host[name][:batch].astype(np.float32) for name in self.output_names}

    def _release_graph(self) -> None:
        if self._graph is not None:
            self.cudart.cudaGraphExecDestroy(self._graph)
            self._graph, self._graph_batch = None, 0

    def close(self) -> None:
        if not self.device:
            return
        self._release_graph()
        self.context = None
        for pointer in self.device.values():
            self.cudart.cudaFree(pointer)
        for array in self.host.values():
            self.cudart.cudaFreeHost(array.ctypes.data)
        self.host, self.device = {}, {}
        self.cudart.cudaStreamDestroy(self.stream)
