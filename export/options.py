"""Everything ``clipedge export`` can be asked for, as one object validated once (the CLI and the API alike).

The CLI builds an :class:`ExportOptions` from its flags and the Python API from keyword arguments; both then
call :meth:`ExportOptions.validate`, so they refuse exactly the same combinations, with the same one-line
messages, before anything heavy loads. An option counts as *given* when its value differs from its default:
one definition of "given" for both callers. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from clipedge.calibration.int8_options import DEFAULT_COUNT, DEFAULT_MIN_AGREEMENT, Int8Options
from clipedge.core.errors import ClipedgeError
from clipedge.runtime.contract import FrameInput, parse_frame
from clipedge.runtime.tensorrt.engine_build import OPTIMIZATION_LEVEL, WORKSPACE_GIB
from clipedge.runtime.tensorrt.operators import OPSET_RANGE as TENSORRT_OPSETS
from clipedge.runtime.triton.repository import RepositoryOptions

from .formats import ExportFormat, validate_export_options

#: the ONNX opset exports use by default: every TensorRT 10.x parses 18 to 20
OPSET = 18
#: torchlib's ONNX functions are written for opset 18; asked for 17, the exporter's down-conversion fails
#: on Reduce* axes inputs and it silently keeps 18, so 17 is refused rather than mislabelled.
MIN_OPSET = 18
#: run images the parity gate compares the export on
PARITY_IMAGES = 64
#: DeepStream: which nvinfer configs --process-mode writes (full frames, detector crops, both)
PROCESS_MODES = {"primary": ("primary",), "secondary": ("secondary",), "both": ("primary", "secondary")}
#: the repository's scheduling options, given to ExportOptions.of by their own names (as the CLI flags are)
REPOSITORY_FIELDS = frozenset(f.name for f in fields(RepositoryOptions))
#: fields that steer how the export runs rather than what it writes: never "given", never refused
RUNNING = frozenset({"format", "progress", "parity_count", "workspace_gib", "optimization_level"})


def check_opset(opset: int) -> None:
    """From what torch's dynamo exporter emits up to what every TensorRT 10.x parser reads."""
    highest = TENSORRT_OPSETS[1]
    if not MIN_OPSET <= opset <= highest:
        raise ClipedgeError(f"--opset {opset}: expected {MIN_OPSET} to {highest} (torch's dynamo exporter emits "
                            f"{MIN_OPSET} or newer; TensorRT 10.x parses up to {highest})")


@dataclass(frozen=True)
class ExportOptions:
    """One export's settings; the fields are the ``clipedge export`` flags (``calib_count`` is ``--calib-count``)."""

    format: str = "onnx"
    out: Path | None = None
    fp16: bool = False
    batch: str | int | None = None
    fixed_batch: bool = False
    embeddings: bool = False
    #: the model ends at the embeddings; class bank and text model beside it (clipedge.export.adaptable)
    adaptable: bool = False
    opset: int = OPSET
    device: str = "cpu"
    timing_cache: Path | None = None
    # INT8 (QDQ) calibration and its gate
    int8: bool = False
    calib: Path | None = None
    calib_count: int = DEFAULT_COUNT
    calib_method: str = "auto"
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    calib_seed: int = 0
    # the camera-frame input
    frame: str | None = None
    pixel_format: str = "rgb"
    colour_matrix: str | None = None
    # DeepStream
    process_mode: str | None = None
    # Triton and DeepStream: replace a non-empty destination
    overwrite: bool = False
    # Triton: the repository's scheduling (its fields are the flags --name, --max-batch, ...)
    repository: RepositoryOptions = RepositoryOptions()
    # how the export runs
    progress: bool = True
    parity_count: int = PARITY_IMAGES
    workspace_gib: float = WORKSPACE_GIB
    optimization_level: int = OPTIMIZATION_LEVEL

    @classmethod
    def of(cls, options: ExportOptions | None = None, **overrides: Any) -> ExportOptions:
        """``options`` (default: all defaults) with ``overrides``; an unknown name is a one-line error."""
        if isinstance(overrides.get("int8"), Int8Options):  # the calibration settings as one object
            settings = overrides.pop("int8")
            overrides.update(int8=True, calib=settings.calib_dir, calib_count=settings.count,
                             calib_method=settings.method, min_agreement=settings.min_agreement, calib_seed=settings.seed)
        base = options or cls()
        scheduling = {name: overrides.pop(name) for name in REPOSITORY_FIELDS & set(overrides)}
        if scheduling:
            overrides["repository"] = replace(overrides.get("repository", base.repository), **scheduling)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ClipedgeError(f"export: unknown option(s) {', '.join(unknown)}; expected some of "
                                f"{', '.join(sorted(known | REPOSITORY_FIELDS))}")
        return replace(base, **overrides)

    def given(self) -> set[str]:
        """The options whose value differs from the default: what a user asked for."""
        given = {f.name for f in fields(self) if f.name not in RUNNING | {"repository"} and getattr(self, f.name) != f.default}
        default = RepositoryOptions()
        return given | {name for name in REPOSITORY_FIELDS if getattr(self.repository, name) != getattr(default, name)}

    def validate(self) -> ExportFormat:
        """Refuse what cannot be written, before any slow work; returns the format's row of the table."""
        spec = validate_export_options(self.format, self.given())
        if self.frame:
            parse_frame(self.frame, self.pixel_format, self.colour_matrix)
        check_opset(self.opset)
        if self.parity_count < 1:
            raise ClipedgeError(f"parity_count {self.parity_count}: expected at least 1 image")
        if self.process_mode is not None and self.process_mode not in PROCESS_MODES:
            raise ClipedgeError(f"--process-mode {self.process_mode}: expected one of {', '.join(PROCESS_MODES)}")
        if self.int8:
            self.int8_options().validate()
        if self.format == "triton":
            self.repository.validate()
        return spec

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else ("fp16" if self.fp16 else "fp32")

    def int8_options(self) -> Int8Options | None:
        if not self.int8:
            return None
        return Int8Options(self.calib, self.calib_count, self.calib_method, self.min_agreement, self.calib_seed)

    def frame_input(self) -> FrameInput | None:
        return parse_frame(self.frame, self.pixel_format, self.colour_matrix) if self.frame else None



