"""``clipedge serve``: a real Triton Inference Server in front of ``clipedge.runtime``.

The server is the ``tritonserver`` binary that the nvidia-pytriton wheel ships (Triton 2.51, CPU-capable),
run as a child process on the scratch repository of :mod:`.serving`. Two facts about that wheel shape the
environment: its python-backend stub links the *system* libpython of our minor version, so the server must
find this interpreter's own ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (else a pyenv/venv interpreter fails with
``'_thread.RLock' object has no attribute '_recursion_count'``); and the stub runs the first ``python3``
on ``PATH``, so this interpreter's ``bin`` goes first there, which gives the stub our site-packages.

Nothing outlives the server object, whatever dies first: tritonserver gets its own process group and a
parent-death signal (SIGKILL when the thread that started it dies, ``kill -9`` of ``clipedge serve``
included); a watchdog process (:mod:`.watchdog`) holding a pipe from us kills that group, stubs included,
and removes the python backend's /dev/shm regions and the scratch folder when the pipe closes. A stop sends
SIGTERM, waits for Triton's own shutdown (in-flight requests get ``EXIT_TIMEOUT_SECONDS``), then kills
what is left of the group. Models are loaded in Triton's explicit model-control mode, so a model whose stub
died can be unloaded (readiness false at once) and loaded again; the repository API that allows it is
restricted to a header holding a secret only this object knows, so clients cannot unload models.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
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
from pathlib import Path

from clipedge.core.errors import ClipedgeError

from .model_control import CONTROL_HEADER, ModelControl
from .processes import describe_exit, parent_death_signal, remove_shared_memory, stub_death, stubs_of
from .serving import ServeOptions, resolve_model, serving_repository

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'clipedge[serve]' (nvidia-pytriton bundles tritonserver)"
SHUTDOWN_SECONDS = 8  # then the group is killed: well inside the 10 s a service manager allows
EXIT_TIMEOUT_SECONDS = 3  # Triton's own wait for in-flight requests before it unloads the models
STARTUP_SECONDS = 120
#: exit status of ``clipedge serve`` when tritonserver or a model died and was not restored (2: a user error)
SERVER_DIED_EXIT = 3
#: a model-control unload that has not answered by then means Triton is stuck (it answers in well under 1 s)
UNLOAD_SECONDS = 10
#: the least a reload is given before Triton is taken to be stuck (the python backend's own default
#: stub-timeout-seconds, its limit for a new stub to connect)
RELOAD_SECONDS = 30
#: start-up lines tritonserver prints on every machine without a GPU: never the reason anything failed
CPU_ONLY_NOISE = ("DCGM unable to start", "Failed to initialize NVML", "CudaDriverHelper has not been initialized",
                  "pinned memory", "CUDA driver version is insufficient")


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


class ServerDied(Exception):
    """tritonserver or a model's stub died and was not (or could not be) restored; the message says which and how.
    Not a :class:`ClipedgeError`: ``clipedge serve`` exits with ``SERVER_DIED_EXIT``, not a user error's 2."""


def check_port_free(host: str, port: int, option: str) -> None:
    """Refuse a port another socket listens on. SO_REUSEADDR as tritonserver binds, so the TIME_WAIT
    connections of a server that just stopped do not block an immediate restart on the same ports."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ClipedgeError(f"{option} {port}: cannot listen on {host}:{port} ({error.strerror or error}); "
                                "is another server running there?") from None


class TritonServer:
    """A ``tritonserver`` child process on a scratch repository; a context manager that always stops it.

    Start it from a thread that outlives it (the parent-death signal follows the starting thread)."""

    def __init__(self, source: Path, options: ServeOptions = ServeOptions()):
        self.options = options
        self.served = resolve_model(Path(source), options)
        self.name = self.served.options.name
        self.process: subprocess.Popen | None = None
        self.workspace: Path | None = None
        self.log_path: Path | None = None
        self.models: list[str] = []
        #: how long the last start took from launch to every model ready: a reload is allowed twice that
        self.ready_seconds = 0.0
        #: live python-backend stub pid → its model, learned after each load
        self.stubs: dict[int, str] = {}
        self._watchdog: subprocess.Popen | None = None
        self._control_token = secrets.token_hex(16)
        #: the python backend's shared-memory regions (/dev/shm), unique to this server so several can run
        self.shm_prefix = f"clipedge_{os.getpid()}_{options.grpc_port}_"

    @property
    def http_url(self) -> str:
        return f"http://{self.options.host}:{self.options.http_port}/{self.name}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.options.host}:{self.options.grpc_port}/{self.name}"

    def start(self, timeout: float = STARTUP_SECONDS, stop: threading.Event | None = None) -> TritonServer:
        """Write the scratch repository, start Triton and wait until every model is ready; given up (a
        :class:`ClipedgeError`, everything stopped) as soon as ``stop`` is set."""
        binary, backend, stub = tritonserver_install()
        from clipedge.runtime.backends import open_backend  # the model must load here before a server is started

        open_backend(self.served.model).close()
        o = self.options
        for option, port in (("--http-port", o.http_port), ("--grpc-port", o.grpc_port), ("--metrics-port", o.metrics_port)):
            check_port_free(o.host, port, option)
        self._watchdog = subprocess.Popen([sys.executable, "-I", str(Path(__file__).with_name("watchdog.py")),
                                           self.shm_prefix], stdin=subprocess.PIPE, start_new_session=True, text=True)
        self.workspace = Path(tempfile.mkdtemp(prefix="clipedge-serve-"))
        self._tell_watchdog(f"path {self.workspace}")
        try:
            launched = time.monotonic()
            self._launch(binary, backend, stub)
            self._wait_ready(timeout, stop)
            self.ready_seconds = time.monotonic() - launched
            self.stubs = stubs_of(self.process.pid)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, binary: Path, backend: Path, stub: Path) -> None:
        o = self.options
        self.models = serving_repository(self.served, self.workspace / "models", o.threads)
        backends = self.workspace / "backends" / "python"
        backends.mkdir(parents=True)
        for item in backend.iterdir():
            if item.is_file():
                (backends / item.name).symlink_to(item)
        (backends / stub.name).symlink_to(stub)
        restricted = f"model-repository:{CONTROL_HEADER}={self._control_token}"
        command = [str(binary), f"--model-repository={self.workspace / 'models'}",
                   f"--backend-directory={self.workspace / 'backends'}", "--strict-readiness=true",
                   "--model-control-mode=explicit", *(f"--load-model={name}" for name in self.models),
                   f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}",
                   f"--http-address={o.host}", f"--http-port={o.http_port}", f"--grpc-address={o.host}",
                   f"--grpc-port={o.grpc_port}", f"--metrics-address={o.host}", f"--metrics-port={o.metrics_port}",
                   f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}", "--log-info=false",
                   f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        self.log_path = self.workspace / "tritonserver.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=server_environment(binary.parents[2] / "nvidia_pytriton.libs"),
                                            start_new_session=True, preexec_fn=parent_death_signal())
        self._tell_watchdog(f"group {self.process.pid}")

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is not None and self._watchdog.stdin is not None:
            try:
                self._watchdog.stdin.write(line + "\n")
                self._watchdog.stdin.flush()
            except (BrokenPipeError, ValueError):
                log.warning("the cleanup watchdog of tritonserver is gone; stopping still cleans up")

    def _wait_ready(self, timeout: float, stop: threading.Event | None) -> None:
        url = f"http://{self.options.host}:{self.options.http_port}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise ClipedgeError("tritonserver: start given up (clipedge serve is stopping)")
            if self.process.poll() is not None:
                how = f"tritonserver {describe_exit(self.process.returncode)} before its models were ready"
                if self.process.returncode < 0:  # killed: no fault of the model or the options
                    raise ServerDied(how)
                raise ClipedgeError(f"{how}: {self.last_error()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        raise ClipedgeError(f"tritonserver: models not ready after {timeout:.0f} s: {self.last_error()}")

    def last_error(self) -> str:
        """The last error line of the server's log (one line), for messages; the start-up chatter of a machine
        without a GPU (DCGM, NVML, pinned memory) is never it."""
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path and self.log_path.is_file() else []
        lines = [line for line in lines if line.strip() and not any(noise in line for noise in CPU_ONLY_NOISE)]
        errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
        return (errors or lines or ["no other output"])[-1].strip()[:400]

    def ended(self, grace: float = 0.0) -> bool:
        """Whether tritonserver has ended, waiting up to ``grace`` s for one that is dying (a crashing server
        closes its sockets, failing a call, a moment before its exit can be seen)."""
        if self.process is None:
            return True
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            return False
        return True

    def exit_status(self) -> int | None:
        """None while tritonserver runs; its return code once it has ended (negative: the signal)."""
        return None if self.process is None else self.process.poll()

    def keep_log(self) -> Path | None:
        """A copy of the server's output outside the scratch folder (which a stop removes), for a post-mortem."""
        if self.log_path is None or not self.log_path.is_file():
            return None
        kept = Path(tempfile.gettempdir()) / f"clipedge-tritonserver-{self.process.pid}.log"
        shutil.copyfile(self.log_path, kept)
        return kept

    def dead_stubs(self) -> dict[str, str]:
        """Models whose python-backend stub has died since they were loaded → how it ended (e.g. "was killed by
        signal SIGKILL (9)", with its pid)."""
        dead: dict[str, str] = {}
        for pid, model in self.stubs.items():
            how = stub_death(pid, self.process.pid)
            if how is not None and model not in dead:
                dead[model] = f"its python backend stub (pid {pid}) {how}"
        return dead

    def unload(self, model: str, stop: threading.Event | None = None) -> None:
        """Unload a model through Triton's model control (its readiness turns false at once)."""
        self._control().call(model, "unload", UNLOAD_SECONDS, lambda: self._why_abandon(stop))
        self.stubs = {pid: name for pid, name in self.stubs.items() if name != model}

    def load(self, model: str, stop: threading.Event | None = None) -> None:
        """Load a model through Triton's model control; returns once it is ready (its new stubs are watched).
        It may take twice as long as the first start took, and at least ``RELOAD_SECONDS``; past that Triton
        is taken to be stuck (:class:`~.model_control.NoAnswer`)."""
        timeout = max(RELOAD_SECONDS, 2 * self.ready_seconds)
        self._control().call(model, "load", timeout, lambda: self._why_abandon(stop))
        self.stubs = stubs_of(self.process.pid)

    def _control(self) -> ModelControl:
        return ModelControl(self.options.host, self.options.http_port, self._control_token)

    def _why_abandon(self, stop: threading.Event | None) -> str | None:
        """Why a model-control call should stop waiting: the server ended, or serve is stopping."""
        if self.process is None:
            return "tritonserver has ended"
        if self.process.poll() is not None:
            return f"tritonserver {describe_exit(self.process.returncode)}"
        if stop is not None and stop.is_set():
            return "clipedge serve is stopping"
        return None

    def stop(self) -> None:
        """SIGTERM (Triton finishes in-flight requests, unloads its models and stops their stubs), then SIGKILL
        what is left of the group; the shared memory, the scratch folder and the watchdog go too."""
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
            self._tell_watchdog(f"done {self.process.pid}")
            self.process = None
            self.stubs = {}
            remove_shared_memory(self.shm_prefix)  # left by a stub or server that was killed
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
            self.workspace = None
        if self._watchdog is not None:
            self._watchdog.stdin.close()
            self._watchdog.wait()
            self._watchdog = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
