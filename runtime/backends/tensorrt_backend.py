"""TensorRT backend (TensorRT 10 + cuda-python): pinned host buffers, one stream, optional CUDA graph.

An engine only runs on the GPU model and TensorRT version it was built with;
the JSON sidecar written by ``clipedge export`` records both, and a mismatch
is refused in one line before TensorRT would fail obscurely.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.errors import ClipedgeError

from .base import Backend

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'clipedge[tensorrt]' on a machine with an NVIDIA GPU"


def read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_name(path.name + ".json")
    try:
        return json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise ClipedgeError(f"model {path}: missing {sidecar.name}, the sidecar `clipedge export --format engine` writes") from None
    except json.JSONDecodeError as error:
        raise ClipedgeError(f"model {sidecar}: corrupt sidecar ({error})") from None


def check_compatible(path: Path, sidecar: dict[str, Any], gpu_name: str, compute_capability: str, tensorrt_version: str) -> None:
    """Refuse an engine built for another GPU or TensorRT version, naming both."""
    built = (sidecar.get("gpu_name"), sidecar.get("compute_capability"), sidecar.get("tensorrt_version"))
    if built[1] != compute_capability or built[0] != gpu_name:
        raise ClipedgeError(
            f"model {path}: engine was built for {built[0]} (compute {built[1]}) but this GPU is {gpu_name} "
            f"(compute {compute_capability}); rebuild it here with `clipedge export RUN --format engine`"
        )
    if built[2] != tensorrt_version:
        raise ClipedgeError(
            f"model {path}: engine was built with TensorRT {built[2]} but TensorRT {tensorrt_version} is installed; rebuild it here"
        )


def _check(result) -> Any:
    """cuda-python returns (error, *values); raise on any error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ClipedgeError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


class TensorRTBackend(Backend):
    def __init__(self, path: Path, cuda_graph: bool = False):
        try:
            import tensorrt as trt
            from cuda.bindings import runtime as cudart
        except ImportError:
            raise ClipedgeError(f"model {path}: TensorRT engines need tensorrt and cuda-python; {INSTALL_HINT}") from None
        if not path.is_file():
            raise ClipedgeError(f"model {path}: no such file")
        self.cudart, self.trt = cudart, trt
        sidecar = read_sidecar(path)
        device = _check(cudart.cudaGetDevice())
        properties = _check(cudart.cudaGetDeviceProperties(device))
        gpu_name = properties.name.decode().rstrip("\x00") if isinstance(properties.name, bytes) else str(properties.name)
        check_compatible(path, sidecar, gpu_name, f"{properties.major}.{properties.minor}", trt.__version__)
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in sidecar.items()}
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ClipedgeError(f"model {path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.input_name = "images"
        self.output_names = [
            self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
            if self.engine.get_tensor_mode(self.engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT
        ]
        low, _, high = (shape[0] for shape in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self.batch_range = (int(low), int(high))
        self.image_size = int(self.engine.get_tensor_shape(self.input_name)[1])
        self.num_classes = len(json.loads(self.metadata["class_names"]))
        self._allocate(high)
        self.use_cuda_graph, self._graphs = cuda_graph, {}
        self.name = "tensorrt" + (" (CUDA graphs)" if cuda_graph else "")

    def _allocate(self, max_batch: int) -> None:
        """Pinned host and device buffers for the largest batch, reused by every call."""
        cudart = self.cudart
        self.host, self.device = {}, {}
        shapes = {self.input_name: ((max_batch, self.image_size, self.image_size, 3), np.uint8)}
        for name in self.output_names:
            width = self.engine.get_tensor_shape(name)[1]
            shapes[name] = ((max_batch, width), np.float32)
        for name, (shape, dtype) in shapes.items():
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            pointer = _check(cudart.cudaMallocHost(nbytes))
            self.host[name] = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_byte * nbytes).from_address(pointer)).view(dtype).reshape(shape)
            self.device[name] = _check(cudart.cudaMalloc(nbytes))
            self.context.set_tensor_address(name, self.device[name])

    def _enqueue(self, batch: int) -> None:
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        host_in = self.host[self.input_name][:batch]
        _check(cudart.cudaMemcpyAsync(self.device[self.input_name], host_in.ctypes.data, host_in.nbytes,
                                      kind.cudaMemcpyHostToDevice, self.stream))
        self.context.execute_async_v3(self.stream)
        for name in self.output_names:
            host_out = self.host[name][:batch]
            _check(cudart.cudaMemcpyAsync(host_out.ctypes.data, self.device[name], host_out.nbytes,
                                          kind.cudaMemcpyDeviceToHost, self.stream))

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(images)
        self.host[self.input_name][:batch] = images
        self.context.set_input_shape(self.input_name, images.shape)
        if self.use_cuda_graph:
            graph = self._graphs.get(batch)
            if graph is None:  # capture once per batch size: copies, kernels and copies back replay as one launch
                self._enqueue(batch)  # TensorRT needs one ordinary run before capture
                _check(self.cudart.cudaStreamSynchronize(self.stream))
                _check(self.cudart.cudaStreamBeginCapture(self.stream, self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
                self._enqueue(batch)
                captured = _check(self.cudart.cudaStreamEndCapture(self.stream))
                graph = self._graphs[batch] = _check(self.cudart.cudaGraphInstantiate(captured, 0))
            _check(self.cudart.cudaGraphLaunch(graph, self.stream))
        else:
            self._enqueue(batch)
        _check(self.cudart.cudaStreamSynchronize(self.stream))
        return {name: self.host[name][:batch].copy() for name in self.output_names}

    def close(self) -> None:
        for pointer in self.device.values():
            self.cudart.cudaFree(pointer)
        for array in self.host.values():
            self.cudart.cudaFreeHost(array.ctypes.data)
        self.cudart.cudaStreamDestroy(self.stream)
