"""Triton client backend: ``grpc://host:port/NAME`` or ``http://host:port/NAME`` behind the runtime's interface.

The model's contract comes from the server, not from a local file: the configuration's ``parameters``
carry the model's clipedge metadata (class names, image size, temperature, rejection threshold, ...), its
``max_batch_size`` bounds each request (larger batches are split client-side by the Classifier), and its
outputs name what is requested. A dead server, an unknown model or a model that is not ready fails at
construction, in one line, instead of on the first frame.

The Classifier serialises calls on one backend, so concurrent callers that want requests in flight at the
same time open one Classifier each (as ``clipedge bench --concurrency`` does).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.backends.base import Backend
from clipedge.runtime.contract import INPUT_NAME

SCHEMES = {"grpc": "tritonclient.grpc", "http": "tritonclient.http"}
DEFAULT_TIMEOUT_S = 30.0
INSTALL_HINT = "pip install 'clipedge[serve]' (tritonclient)"


@dataclass(frozen=True)
class ServerURL:
    """``scheme://host:port/NAME`` split into its parts."""

    scheme: str
    address: str
    model: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}/{self.model}"


def parse_server_url(url: str) -> ServerURL:
    scheme, sep, rest = url.partition("://")
    address, _, model = rest.partition("/")
    if not sep or scheme not in SCHEMES or not address or not model or "/" in model:
        raise ClipedgeError(f"model {url}: expected grpc://HOST:PORT/NAME or http://HOST:PORT/NAME")
    return ServerURL(scheme, address, model)


def _message(error: Exception) -> str:
    text = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
    return " ".join(str(text).split())[:300] or type(error).__name__


class TritonBackend(Backend):
    """A model on a Triton Inference Server, reached over gRPC or HTTP with tritonclient."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.url = parse_server_url(url)
        try:
            client_module = __import__(SCHEMES[self.url.scheme], fromlist=["InferenceServerClient"])
            from tritonclient.grpc import model_config_pb2
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise ClipedgeError(f"model {url}: Triton URLs need tritonclient: {INSTALL_HINT}") from None
        self.timeout_s, self._module, self._errors = timeout_s, client_module, InferenceServerException
        self._local = threading.local()
        self.config = self._config(model_config_pb2)
        self.name = f"triton:{self.url.scheme}"
        self.metadata = self._metadata()
        image = next((i for i in self.config.input if i.name == INPUT_NAME), None)
        if image is None or image.data_type != model_config_pb2.TYPE_UINT8:
            raise ClipedgeError(f"model {url}: takes no uint8 {INPUT_NAME!r} input (the _encoded twin is for "
                                "image bytes: use the model without the suffix)")
        batch = self.config.max_batch_size
        dims = tuple(int(d) for d in image.dims)
        self.input_shape = (None, *dims) if batch else dims
        self.input_dtype = "uint8"
        self.output_names = [o.name for o in self.config.output]
        probs = next((o for o in self.config.output if o.name == "probs"), None)
        self.num_classes = int(probs.dims[-1]) if probs is not None else None
        self.batch_range = (1, batch) if batch else (dims[0], dims[0])

    @property
    def client(self) -> Any:
        """This thread's client: tritonclient's HTTP client runs on gevent, whose connections belong to the
        thread that made them, so each thread gets its own (gRPC's would be shareable; one rule keeps it simple)."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self.url.scheme == "grpc":
                client = self._module.InferenceServerClient(self.url.address)
            else:
                client = self._module.InferenceServerClient(self.url.address, connection_timeout=self.timeout_s,
                                                            network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _call(self, what: str, function, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._errors as error:
            raise ClipedgeError(f"model {self.url}: {what} failed ({_message(error)})") from None
        except Exception as error:  # noqa: BLE001 - transport errors (gevent, grpc) share no public base class
            raise ClipedgeError(f"model {self.url}: {what} failed ({type(error).__name__}: {_message(error)})") from None

    def _config(self, model_config_pb2):
        """Server live, model ready, then its ``ModelConfig`` (as a message for both protocols)."""
        try:
            live = self.client.is_server_live()
        except Exception as error:  # noqa: BLE001 - refused connections surface as several exception types
            raise ClipedgeError(f"model {self.url}: no Triton server answers at {self.url.address} "
                                f"({_message(error)}); is `clipedge serve` running?") from None
        if not live:
            raise ClipedgeError(f"model {self.url}: the server at {self.url.address} is not live")
        if not self._call("readiness check", self.client.is_model_ready, self.url.model):
            raise ClipedgeError(f"model {self.url}: not a ready model on this server{self._model_list()}")
        config = self._call("config request", self.client.get_model_config, self.url.model)
        if self.url.scheme == "grpc":
            return config.config
        from google.protobuf import json_format

        return json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)

    def _model_list(self) -> str:
        """" (models: a, b)" where the server lets clients list its repository; `clipedge serve` restricts that API
        (it also loads and unloads models), so there the message goes without it."""
        try:
            index = self.client.get_model_repository_index()
        except self._errors:
            return ""
        names = [m.name for m in index.models] if hasattr(index, "models") else [m["name"] for m in index]
        return f" (models: {', '.join(names) or 'none'})"

    def _metadata(self) -> dict[str, str]:
        entry = self.config.parameters.get("clipedge")
        if entry is None:
            raise ClipedgeError(f"model {self.url}: its configuration has no clipedge parameters; serve models "
                                "written by `clipedge repository`/`clipedge serve`")
        try:
            metadata = json.loads(entry.string_value)
        except json.JSONDecodeError as error:
            raise ClipedgeError(f"model {self.url}: malformed clipedge parameters ({error})") from None
        return {str(key): str(value) for key, value in metadata.items()}

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        request = self._module.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        request.set_data_from_numpy(images)
        outputs = [self._module.InferRequestedOutput(name) for name in self.output_names]
        options = {"client_timeout": self.timeout_s} if self.url.scheme == "grpc" else {}
        result = self._call("inference", self.client.infer, self.url.model, [request], outputs=outputs, **options)
        return {name: result.as_numpy(name) for name in self.output_names}

    def statistics(self) -> dict[str, Any]:
        """The server's statistics for this model (KServe's ``/v2/models/NAME/stats``), as JSON."""
        stats = self._call("statistics request", self.client.get_inference_statistics, self.url.model,
                           **({"as_json": True} if self.url.scheme == "grpc" else {}))
        return stats["model_stats"][0]

    def close(self) -> None:
        """Close this thread's client; clients of other threads are dropped with their threads' connections."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
        self._local = threading.local()
