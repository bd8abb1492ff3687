"""TensorRT backend (TensorRT 10/11 Python API + cuda-python): pinned host buffers, one stream, optional CUDA graph.

An engine runs only on the GPU architecture (compute capability) and the exact
TensorRT version it was built with. The JSON sidecar ``clipedge engine`` writes
next to it (``model.engine.json``) records both, and the engine file's size and
SHA-256, so a mismatch, a truncated engine or a sidecar of another engine is
refused in one line before TensorRT would fail obscurely. A different GPU name
with the same compute capability only warns: TensorRT runs such engines,
possibly with less-than-optimal kernels.

Engines built by other tools (trtexec, Polygraphy) have no sidecar: names,
dtypes and the batch range come from the engine itself, class names from the
ONNX of the same name or a ``labels.txt`` beside it. TensorRT's API exposes no
build version or GPU of a serialized engine, so for them the compatibility
check is TensorRT's own: deserialization fails, and that is reported in one line.

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

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.tensorrt_environment import cuda_check, current_gpu, import_cudart, import_tensorrt

from ..contract import (
    INPUT_NAME,
    check_sidecar_matches,
    encode_metadata,
    foreign_engine_metadata,
    read_sidecar,
    score_output,
    sidecar_path,
)
from .base import Backend

log = logging.getLogger(__name__)
REBUILD = "rebuild it here with `clipedge engine MODEL.onnx`"


def check_compatible(engine: Path, sidecar: dict[str, Any], gpu_name: str, compute_capability: str,
                     tensorrt_version: str) -> None:
    """Refuse an engine built for another GPU architecture or TensorRT version, naming both sides; an engine built
    ``--hardware-compatible`` (Ampere or newer) or ``--version-compatible`` is left to TensorRT on that count."""
    built_gpu, built_cc = sidecar.get("gpu_name", "an unrecorded GPU"), sidecar.get("compute_capability")
    built_trt = sidecar.get("tensorrt_version")
    flags = sidecar.get("build_flags") or {}
    if built_cc != compute_capability and not flags.get("hardware_compatible"):
        raise ClipedgeError(
            f"model {engine}: engine was built for {built_gpu} (compute {built_cc}) but this GPU is {gpu_name} "
            f"(compute {compute_capability}); {REBUILD}")
    if built_trt != tensorrt_version and not flags.get("version_compatible"):
        raise ClipedgeError(
            f"model {engine}: engine was built with TensorRT {built_trt} but TensorRT {tensorrt_version} is installed; "
            f"{REBUILD}")
    if built_gpu != gpu_name:
        log.warning("model %s: built on %s, running on %s (compute %s, built for %s)", engine, built_gpu, gpu_name,
                    compute_capability, built_cc)


class TensorRTBackend(Backend):
    """A deserialised TensorRT engine with its execution context, stream and buffers."""

    def __init__(self, path: Path, cuda_graph: bool = False):
        sidecar = read_sidecar(path) if sidecar_path(path).is_file() else None
        if sidecar is not None:  # files first: a truncated engine or a stranger's sidecar needs no GPU to refuse
            check_sidecar_matches(path, sidecar)
        self.metadata = encode_metadata(sidecar) if sidecar is not None else foreign_engine_metadata(path)
        trt, cudart = import_tensorrt(), import_cudart()
        self.trt, self.cudart = trt, cudart
        gpu = current_gpu(cudart)
        if sidecar is not None:
            check_compatible(path, sidecar, gpu["gpu_name"], gpu["compute_capability"], trt.__version__)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if sidecar is not None and sidecar.get("build_flags", {}).get("version_compatible"):
            runtime.engine_host_code_allowed = True  # a version-compatible plan carries its own lean runtime
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ClipedgeError(
                f"model {path}: TensorRT {trt.__version__} could not deserialise it on {gpu['gpu_name']} (compute "
                f"{gpu['compute_capability']}): a truncated file, or an engine built with another TensorRT version or "
                f"for another GPU (see TensorRT's log above); {REBUILD}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ClipedgeError(f"model {path}: expected one input tensor ({INPUT_NAME!r}), the engine has "
                                f"{len(inputs)}: {', '.join(inputs)}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sidecar is None:
            log.info("model %s: no sidecar; tensors and batch range read from the engine (hardware compatibility %s)",
                     path.name, self.engine.hardware_compatibility_level)
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.input_shape = tuple(d if d >= 0 else None for d in shape)
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name))).name
        if shape[0] >= 0:  # built for a fixed batch
            self.batch_range = (shape[0], shape[0])
        else:
            low, _, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.batch_range = (int(low[0]), int(high[0]))
        scores = score_output(self.output_names)  # as onnxruntime's backend: an adaptable engine's embeddings width
        self.num_classes = int(self.engine.get_tensor_shape(scores)[-1]) if scores else None
        self.stream = cuda_check(cudart.cudaStreamCreate())
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
        for name in [self.input_name, *self.output_names]:
            shape = [max_batch if d < 0 else d for d in self.engine.get_tensor_shape(name)]
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            pointer = cuda_check(self.cudart.cudaMallocHost(nbytes))
            self.host[name] = np.frombuffer((ctypes.c_byte * nbytes).from_address(pointer), dtype=dtype).reshape(shape)
            self.device[name] = cuda_check(self.cudart.cudaMalloc(nbytes))
            if not self.context.set_tensor_address(name, self.device[name]):
                raise ClipedgeError(f"TensorRT refused the device buffer for tensor {name!r} (see its log above)")

    def _enqueue(self, batch: int) -> None:
        """Copy in, run, copy out, all queued on the stream."""
        kind = self.cudart.cudaMemcpyKind
        host_in = self.host[self.input_name][:batch]
        cuda_check(self.cudart.cudaMemcpyAsync(self.device[self.input_name], host_in.ctypes.data, host_in.nbytes,
                                           kind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):  # TensorRT takes the raw stream handle
            raise ClipedgeError("TensorRT failed to enqueue the engine (see its log above)")
        for name in self.output_names:
            host_out = self.host[name][:batch]
            cuda_check(self.cudart.cudaMemcpyAsync(host_out.ctypes.data, self.device[name], host_out.nbytes,
                                               kind.cudaMemcpyDeviceToHost, self.stream))

    def _capture(self, batch: int) -> None:
        """Record one enqueue for this batch size into a CUDA graph (after one ordinary run, as TensorRT asks)."""
        self._release_graph()
        self._enqueue(batch)
        cuda_check(self.cudart.cudaStreamSynchronize(self.stream))
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_check(self.cudart.cudaStreamBeginCapture(self.stream, mode))
        self._enqueue(batch)
        graph = cuda_check(self.cudart.cudaStreamEndCapture(self.stream))
        self._graph = cuda_check(self.cudart.cudaGraphInstantiate(graph, 0))
        cuda_check(self.cudart.cudaGraphDestroy(graph))
        self._graph_batch = batch

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(images)
        low, high = self.batch_range
        if not low <= batch <= high:
            raise ClipedgeError(f"TensorRT engine: batch {batch} is outside its profile's range {low}..{high}")
        self.host[self.input_name][:batch] = images
        if not self.context.set_input_shape(self.input_name, images.shape):
            raise ClipedgeError(f"TensorRT refused input shape {list(images.shape)} (batch range {self.batch_range})")
        if self.cuda_graph:
            if self._graph_batch != batch:
                self._capture(batch)
            cuda_check(self.cudart.cudaGraphLaunch(self._graph, self.stream))
        else:
            self._enqueue(batch)
        cuda_check(self.cudart.cudaStreamSynchronize(self.stream))
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
