"""``clipedge serve``: a real Triton Inference Server in front of ``clipedge.runtime``.

The server is the ``tritonserver`` binary that the nvidia-pytriton wheel ships (Triton 2.51, CPU-capable),
run as a child process on a scratch repository: the model under its name with the exact tensors, labels and
parameters of a written repository (``repository.build_config``), served by Triton's python backend
through ``python_model.py`` (so onnxruntime or a TensorRT engine via the runtime's own backends), plus
``NAME_encoded``, a twin that takes JPEG/PNG bytes. Two facts about that wheel shape the environment:
its python-backend stub links the *system* libpython of our minor version, so the server must find this
interpreter's own ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (else a pyenv/venv interpreter fails with
``'_thread.RLock' object has no attribute '_recursion_count'``); and the stub runs the first ``python3``
on ``PATH``, so this interpreter's ``bin`` goes first there, which gives the stub our site-packages.

The server gets its own process group; stopping sends it SIGTERM, waits for Triton's own shutdown, and
then kills whatever of that group is left, so no stub process outlives ``clipedge serve``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from clipedge.core.errors import ClipedgeError

from ..contract import sidecar_path
from .parameters import ENCODED_PARAMETER, MODEL_FILE_PARAMETER, PYTHON_MODEL_SOURCE, THREADS_PARAMETER
from .repository import (
    PLATFORMS,
    RepositoryOptions,
    build_config,
    model_config_pb2,
    parse_config,
    read_signature,
    write_model_folder,
)

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'clipedge[serve]' (nvidia-pytriton bundles tritonserver)"
ENCODED_SUFFIX = "_encoded"
SHUTDOWN_SECONDS = 8  # then the group is killed: well inside the 10 s a service manager allows
EXIT_TIMEOUT_SECONDS = 3  # Triton's own wait for in-flight requests before it unloads the models
STARTUP_SECONDS = 120


@dataclass(frozen=True)
class ServeOptions:
    """Ports, address and scheduling of ``clipedge serve`` (None: the repository's or model's own value)."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    name: str | None = None
    max_batch: int | None = None
    max_queue_delay_us: int | None = None
    instances: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class ServedModel:
    """The exported model file to serve and the repository options it is served with."""

    model: Path
    options: RepositoryOptions


def resolve_model(source: Path, serve: ServeOptions) -> ServedModel:
    """An exported ``.onnx``/``.engine`` file, a model folder (``NAME/config.pbtxt``) or a repository with one
    model (or the one ``--name`` picks); a repository's own scheduling applies where no option overrides it."""
    if source.is_file():
        base = RepositoryOptions(name=serve.name or "clipedge")
    elif (source / "config.pbtxt").is_file():
        return _from_model_folder(source, serve)
    elif source.is_dir():
        folders = sorted(p.parent for p in source.glob("*/config.pbtxt"))
        if serve.name:
            folders = [f for f in folders if f.name == serve.name]
        if len(folders) != 1:
            names = ", ".join(f.name for f in sorted(source.glob("*/config.pbtxt"))) or "none"
            raise ClipedgeError(f"MODEL_OR_REPO {source}: expected one model folder with a config.pbtxt "
                                f"(found: {names}); pick one with --name")
        return _from_model_folder(folders[0], serve)
    else:
        raise ClipedgeError(f"MODEL_OR_REPO {source}: no such file or folder")
    return ServedModel(source, _override(base, serve))


def _from_model_folder(folder: Path, serve: ServeOptions) -> ServedModel:
    config = parse_config((folder / "config.pbtxt").read_text(encoding="utf-8"), folder / "config.pbtxt")
    files = [folder / "1" / name for _, name in PLATFORMS.values() if (folder / "1" / name).is_file()]
    if not files:
        raise ClipedgeError(f"MODEL_OR_REPO {folder}: no 1/model.onnx or 1/model.plan in the model folder")
    base = RepositoryOptions(name=serve.name or config.name or folder.name, max_batch=config.max_batch_size or None,
                             max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
                             instances=sum(g.count for g in config.instance_group) or 1)
    return ServedModel(files[0], _override(base, serve))


def _override(base: RepositoryOptions, serve: ServeOptions) -> RepositoryOptions:
    changes = {key: value for key, value in (("max_batch", serve.max_batch), ("instances", serve.instances),
                                             ("max_queue_delay_us", serve.max_queue_delay_us)) if value is not None}
    options = replace(base, **changes)
    options.validate()
    return options


def serving_repository(served: ServedModel, repo: Path, threads: int | None = None) -> list[str]:
    """The scratch repository: NAME and NAME_encoded, both python-backend models over the same model file."""
    signature = read_signature(served.model)
    model_file = PLATFORMS[served.model.suffix.lower()][1]
    source = Path(__file__).with_name(PYTHON_MODEL_SOURCE).read_text(encoding="utf-8")
    files = {"1/model.py": source, f"1/{model_file}": served.model}
    if served.model.suffix.lower() != ".onnx":  # engines carry their contract in a sidecar
        files[f"1/{sidecar_path(Path(model_file)).name}"] = sidecar_path(served.model)
    parameters = {MODEL_FILE_PARAMETER: model_file, THREADS_PARAMETER: str(threads or 0)}
    config = build_config(signature, served.options, backend="python", extra_parameters=parameters)
    write_model_folder(signature, repo, config, files, link=True)
    encoded = build_config(signature, replace(served.options, name=served.options.name + ENCODED_SUFFIX),
                           backend="python", extra_parameters={**parameters, ENCODED_PARAMETER: "true"})
    del encoded.input[:]
    del encoded.model_warmup[:]  # zero bytes are no image: a warmup would fail the model's load
    if not encoded.max_batch_size:  # a fixed-batch model: the twin batches like it, one encoded image per row
        encoded.max_batch_size = signature.fixed_batch
        encoded.dynamic_batching.max_queue_delay_microseconds = served.options.max_queue_delay_us
        for output in encoded.output:
            del output.dims[0]
    encoded.input.add(name="images", data_type=model_config_pb2().TYPE_STRING, dims=[1])
    write_model_folder(signature, repo, encoded, files, link=True)
    return [config.name, encoded.name]


def tritonserver_install() -> tuple[Path, Path, Path]:
    """(tritonserver binary, the python backend folder, this Python's backend stub) from nvidia-pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ClipedgeError(f"clipedge serve needs Triton Inference Server: {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary, backend = root / "bin" / "tritonserver", root / "backends" / "python"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not binary.is_file() or not stub.is_file():
        raise ClipedgeError(f"nvidia-pytriton at {root.parent} lacks tritonserver or a Python {version} backend stub")
    return binary, backend, stub


def server_environment(libs: Path) -> dict[str, str]:
    """The stub's libpython (this interpreter's LIBDIR), the wheel's bundled libraries, and this Python first on PATH."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def check_port_free(host: str, port: int, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ClipedgeError(f"{option} {port}: cannot listen on {host}:{port} ({error.strerror or error}); "
                                "is another server running there?") from None


class TritonServer:
    """A ``tritonserver`` child process on a scratch repository; a context manager that always stops it."""

    def __init__(self, source: Path, options: ServeOptions = ServeOptions()):
        self.options = options
        self.served = resolve_model(Path(source), options)
        self.name = self.served.options.name
        self.process: subprocess.Popen | None = None
        self.workspace: Path | None = None
        #: the python backend's shared-memory regions (/dev/shm), unique to this server so several can run
        self.shm_prefix = f"clipedge_{os.getpid()}_{options.grpc_port}_"

    @property
    def http_url(self) -> str:
        return f"http://{self.options.host}:{self.options.http_port}/{self.name}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.options.host}:{self.options.grpc_port}/{self.name}"

    def start(self, timeout: float = STARTUP_SECONDS) -> TritonServer:
        """Write the scratch repository, start Triton and wait until every model is ready."""
        binary, backend, stub = tritonserver_install()
        from clipedge.runtime.backends import open_backend  # the model must load here before a server is started

        open_backend(self.served.model).close()
        o = self.options
        for option, port in (("--http-port", o.http_port), ("--grpc-port", o.grpc_port), ("--metrics-port", o.metrics_port)):
            check_port_free(o.host, port, option)
        self.workspace = Path(tempfile.mkdtemp(prefix="clipedge-serve-"))
        serving_repository(self.served, self.workspace / "models", o.threads)
        backends = self.workspace / "backends" / "python"
        backends.mkdir(parents=True)
        for item in backend.iterdir():
            if item.is_file():
                (backends / item.name).symlink_to(item)
        (backends / stub.name).symlink_to(stub)
        command = [str(binary), f"--model-repository={self.workspace / 'models'}",
                   f"--backend-directory={self.workspace / 'backends'}", "--strict-readiness=true",
                   f"--http-address={o.host}", f"--http-port={o.http_port}", f"--grpc-address={o.host}",
                   f"--grpc-port={o.grpc_port}", f"--metrics-address={o.host}", f"--metrics-port={o.metrics_port}",
                   f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}", "--log-info=false",
                   f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        self.log_path = self.workspace / "tritonserver.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=server_environment(binary.parents[2] / "nvidia_pytriton.libs"),
                                            start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        url = f"http://{self.options.host}:{self.options.http_port}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClipedgeError(f"tritonserver exited with status {self.process.returncode}: {self.last_error()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        raise ClipedgeError(f"tritonserver: models not ready after {timeout:.0f} s: {self.last_error()}")

    def last_error(self) -> str:
        """The last error line of the server's log (one line), for messages."""
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.is_file() else []
        errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
        return (errors or lines or ["no output"])[-1].strip()[:400]

    def stop(self) -> None:
        """SIGTERM (Triton unloads its models and stops their stubs), then SIGKILL what is left of the group."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(SHUTDOWN_SECONDS)
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver did not stop within %d s; killing it", SHUTDOWN_SECONDS)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # our own group: stubs left behind, if any
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None
            for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):  # left by a stub that was killed
                region.unlink(missing_ok=True)
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
            self.workspace = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(server: TritonServer, echo=print) -> None:
    """Run until SIGTERM or Ctrl-C (or the server dies), then stop cleanly."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        echo(f"serving {server.name} ({server.served.model}) through Triton Inference Server:")
        echo(f"  {server.grpc_url}   {server.http_url}   (and {server.name}{ENCODED_SUFFIX} for JPEG/PNG bytes)")
        echo(f"  metrics http://{server.options.host}:{server.options.metrics_port}/metrics; Ctrl-C or SIGTERM stops it")
        while not stop.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                raise ClipedgeError(f"tritonserver exited unexpectedly: {server.last_error()}")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
