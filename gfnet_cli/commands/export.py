"""Exporting a GFNet for deployment: an ONNX file or a ``torch.export`` program (``.pt2``).

The global filter's FFT is what keeps most GFNets from deploying: PyTorch's legacy ONNX
exporter never supported ``rfft2``/``irfft2``, and runtimes implement ONNX's ``DFT`` late,
partially or not at all. An export therefore carries the filter in one of two forms:

- ``native``: the FFT as ONNX ``DFT`` operators (the dynamo exporter, via onnxscript), or as
  ``aten`` FFT ops in a ``.pt2``;
- ``matmul``: the same real 2-D DFT, filter product and inverse as products with DFT matrices
  (``filter_form("matmul")`` in :mod:`gfnet_cli.models.layers`), which every runtime runs.

``fft="auto"`` exports the native form, runs it (onnxruntime, or ``torch.export.load``)
against PyTorch, and falls back to the matmul form when the installed runtime cannot load it
or gets it wrong. For ONNX it also writes the matmul form and keeps the faster of the two
correct files in the installed onnxruntime (whose CPU ``DFT`` is an order of magnitude slower
than the products for GFNet's grids); a ``.pt2`` keeps the native form, which PyTorch runs with
its own FFT. Every file is checked the same way before it is renamed into place, so a failed
export leaves nothing behind; the check's largest logit difference is reported.

``quantize="int8"`` (ONNX only) quantizes the checked fp32 file's MLPs and head with
onnxruntime (:mod:`gfnet_cli.engine.int8`) and checks the int8 file against the fp32 PyTorch
model on :data:`INT8_CHECK_IMAGES` images: top-1 agreement and the largest logit error are
written to its metadata (``quantization``) and reported, and a file that falls short of
:data:`INT8_MIN_AGREEMENT` or :data:`INT8_TOLERANCE` is refused.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gfnet_cli import __version__
from gfnet_cli.engine.inference import ProgressCallback
from gfnet_cli.engine.onnx_model import (
    INPUT_NAME,
    OUTPUT_NAME,
    PT2_EXTRA_FILE,
    OnnxModel,
    export_metadata,
    import_onnxruntime,
    is_onnx_file,
    max_abs_diff,
    metadata_props,
)
from gfnet_cli.errors import (
    ConfigError,
    GFNetError,
    MissingDependencyError,
    UsageError,
    first_line,
    write_error,
)
from gfnet_cli.hub.locks import writing
from gfnet_cli.hub.resolve import load_model
from gfnet_cli.hub.serialization import check_output_file, publish_file, write_bytes
from gfnet_cli.models.config import to_pair
from gfnet_cli.models.gfnet import GFNetArchitecture
from gfnet_cli.models.layers import filter_form, fused_inference

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2")
FFT_CHOICES = ("auto", "native", "matmul")
QUANTIZE_CHOICES = ("int8",)
# The int8 check: this many images (drawn like the fp32 check's), the share of them whose top-1
# must equal PyTorch's fp32 top-1, and the largest logit error allowed relative to the largest
# logit (at least 1). int8 MLPs move logits by ~1 % of their range; a broken file by far more.
INT8_CHECK_IMAGES = 32
INT8_MIN_AGREEMENT = 0.95
INT8_TOLERANCE = 0.1
SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}
MIN_OPSET = 18  # the dynamo exporter's lowest; it silently writes 18 when asked for less
MAX_DYNAMIC_BATCH = 4096
# A check input per batch size: the dynamic graph is run at two sizes, neither the traced one.
DYNAMIC_CHECK_BATCHES = (1, 3)
TRACE_BATCH = 2
# ``auto`` times each correct ONNX form this many times (after one warm-up run) in onnxruntime.
AUTO_TIMING_RUNS = 3
# How far a runtime's logits may stray from PyTorch's before a form is rejected, relative to
# the largest logit (at least 1). fp32 round-off is ~1e-6 of it; a wrong DFT is ~1e-1.
CHECK_TOLERANCE = 1e-3


@dataclass
class ExportResult:
    """What ``export_model`` wrote, and how closely the file reproduces PyTorch."""

    output: Path
    format: str
    fft: str  # the filter's form in the file: native | matmul
    img_size: tuple[int, int]
    max_abs_diff: float  # largest |logit difference| between the file and PyTorch
    batch_size: int | None  # None: dynamic
    opset: int | None  # ONNX opset (None for .pt2)
    checked_batch_sizes: tuple[int, ...] = ()
    native_rejected: str | None = None  # why ``auto`` did not keep the native form
    timings_ms: dict[str, float] = field(default_factory=dict)  # ``auto``: onnxruntime, per form
    metadata: dict[str, Any] = field(default_factory=dict)
    quantize: str | None = None  # int8, or None for fp32
    quantization: dict[str, Any] = field(default_factory=dict)  # the int8 check, file sizes

    def to_dict(self) -> dict[str, Any]:
        """The ``export --json`` document of docs/cli.md (plus batch size and opset)."""
        return {
            "output": str(self.output),
            "format": self.format,
            "fft": self.fft,
            "img_size": list(self.img_size),
            "max_abs_diff": self.max_abs_diff,
            "batch_size": self.batch_size,
            "opset": self.opset,
            "quantize": self.quantize,
            **({"quantization": self.quantization} if self.quantization else {}),
        }


class ExportCheckError(GFNetError):
    """An exported file could not be run, or disagrees with PyTorch."""


def export_model(
    model: str | Path | GFNetArchitecture,
    output: str | Path,
    *,
    format: str | None = None,  # named like the --format flag
    img_size: int | tuple[int, int] | None = None,
    batch_size: int | None = None,
    dynamic_batch: bool | None = None,
    opset: int | None = None,
    fft: str = "auto",
    quantize: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export MODEL (or a loaded :class:`GFNet`) to ``output``, checked against PyTorch.

    ``format``: ``onnx`` or ``pt2`` (default: from ``output``'s suffix, else ``onnx``).
    ``img_size``: the input size built into the file (``N`` or ``(H, W)``; default: the
    model's), weights resized as ``load_model(img_size=)`` does. The batch dimension is
    dynamic unless ``batch_size`` fixes it. ``opset``: the ONNX opset (default: the
    exporter's). ``fft``: ``auto``, ``native`` or ``matmul`` (module docstring).
    ``quantize``: ``"int8"`` for an int8 ONNX file, checked against fp32. The file is
    written under a temporary name, checked, and renamed into place; an existing ``output``
    is replaced only with ``overwrite``. ``progress(done, total)`` counts the steps.
    """
    output = Path(output).expanduser()
    check_output_file(output, overwrite=overwrite, parent_must_exist=False)
    file_format = _check_format(format, output)
    _check_choice("fft", fft, FFT_CHOICES)
    if quantize is not None:
        _check_choice("quantize", quantize, QUANTIZE_CHOICES)
        if file_format != "onnx":
            raise UsageError(
                f"quantize {quantize} writes ONNX files, not {file_format}",
                param=("quantize", "format"),
            )
    fixed_batch = _check_batch(batch_size, dynamic_batch)
    opset = _check_opset(opset, file_format)
    if file_format == "onnx":
        _require_onnx_exporter()
    forms = ["native", "matmul"] if fft == "auto" else [fft]
    total = 1 + 2 * len(forms) + (fft == "auto" and file_format == "onnx") + 2 * bool(quantize)
    steps = _Steps(progress, total=total)
    net = _model_to_export(model, img_size)
    steps.done()
    checks = _check_inputs(net, fixed_batch)
    job = _Job(net, file_format, output, checks, fixed_batch, opset, quantize)
    missing = [p for p in (output.parent, *output.parent.parents) if not p.exists()]
    try:
        with writing(output):  # one writer; partial files of a killed export are removed
            return _write_first_that_checks(job, forms, fft, overwrite, steps)
    except OSError as exc:
        raise write_error(exc, output) from None
    finally:
        if not output.exists():
            for folder in missing:  # folders made for OUT go too: nothing is left behind
                with contextlib.suppress(OSError):
                    folder.rmdir()


@dataclass
class _Job:
    """What every attempt at writing the file shares."""

    net: GFNetArchitecture
    file_format: str
    output: Path
    checks: list[tuple[torch.Tensor, torch.Tensor]]  # (images, PyTorch's logits)
    fixed_batch: int | None
    opset: int | None
    quantize: str | None = None


@dataclass
class _Written:
    """A form written to a temporary file that passed its check."""

    form: str
    staged: Path
    diff: float
    opset: int | None


def _write_first_that_checks(
    job: _Job, forms: list[str], fft: str, overwrite: bool, steps: _Steps
) -> ExportResult:
    """Write the forms that ``fft`` asks for and publish the one to keep.

    ``native`` / ``matmul``: that form, or an error. ``auto``: native, then matmul where native
    fails its check; for ONNX both, keeping the faster in onnxruntime.
    """
    written: list[_Written] = []
    rejected: str | None = None
    try:
        for form in forms:
            try:
                written.append(_Written(form, *_write_checked(job, form, steps)))
            except ExportCheckError as exc:
                if form != "native" or fft != "auto":
                    raise
                rejected = str(exc)
                logger.warning("native FFT export rejected (%s); exporting the matmul form", exc)
                continue
            if fft == "auto" and job.file_format != "onnx":
                break  # torch runs the native program with its own FFT: nothing to compare
        timings = _time_onnx(job, written) if len(written) > 1 else {}
        if timings:
            steps.done()
        keep = min(written, key=lambda item: timings.get(item.form, 0.0))
        if keep.form != "native" and rejected is None and timings:
            rejected = (
                f"slower: {timings['native']:.3g} ms per batch in onnxruntime against "
                f"{timings['matmul']:.3g} ms for matmul"
            )
            logger.info("keeping the matmul form: native is %s", rejected)
        quantization: dict[str, Any] = {}
        if job.quantize:
            quantization = _quantize_checked(job, keep, steps)
        _publish(keep.staged, job.output, overwrite)
    finally:
        for item in written:
            item.staged.unlink(missing_ok=True)
    steps.finish()
    return ExportResult(
        output=job.output,
        format=job.file_format,
        fft=keep.form,
        img_size=job.net.config.image_size,
        max_abs_diff=keep.diff,
        batch_size=job.fixed_batch,
        opset=keep.opset,
        checked_batch_sizes=tuple(len(x) for x, _ in job.checks),
        native_rejected=rejected,
        timings_ms=timings,
        metadata=export_metadata(job.net.config, fft=keep.form, batch_size=job.fixed_batch),
        quantize=job.quantize,
        quantization=quantization,
    )


def _quantize_checked(job: _Job, keep: _Written, steps: _Steps) -> dict[str, Any]:
    """Quantize ``keep``'s staged fp32 file in place to int8 and check it (module docstring).

    Returns the check's figures, also written to the file's ``quantization`` metadata.
    """
    import onnx

    from gfnet_cli.engine.int8 import quantize_int8

    int8 = keep.staged.with_name(keep.staged.name + ".int8.onnx")
    try:
        quantize_int8(keep.staged, int8)
        steps.done()
        images, reference = _int8_check_inputs(job)
        logits = torch.from_numpy(_run_onnx(int8, images))
        agreement = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
        error = max_abs_diff(reference, logits.numpy())
        tolerance = INT8_TOLERANCE * max(1.0, float(reference.abs().max()))
        figures = {
            "type": "int8",
            "method": "onnxruntime quantize_dynamic (MatMul weights per channel)",
            "check_images": len(images),
            "top1_agreement": round(agreement, 4),
            "max_logit_error": error,
            "fp32_bytes": keep.staged.stat().st_size,
            "int8_bytes": int8.stat().st_size,
        }
        if agreement < INT8_MIN_AGREEMENT or not error <= tolerance:
            raise ExportCheckError(
                f"the int8 file fails its check against fp32: top-1 agrees on {agreement:.1%} "
                f"of {len(images)} images (at least {INT8_MIN_AGREEMENT:.0%} needed), largest "
                f"logit error {error:.3g} (tolerance {tolerance:.3g}); export without quantize"
            )
        proto = onnx.load(str(int8))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "quantization", json.dumps(figures)
        onnx.save_model(proto, str(int8))
        steps.done()
        os.replace(int8, keep.staged)
        return figures
    finally:
        int8.unlink(missing_ok=True)


def _int8_check_inputs(job: _Job) -> tuple[torch.Tensor, torch.Tensor]:
    """:data:`INT8_CHECK_IMAGES` images (of the file's batch size) and PyTorch's fp32 logits."""
    config = job.net.config
    generator = torch.Generator().manual_seed(1)
    count = INT8_CHECK_IMAGES
    if job.fixed_batch is not None:  # whole batches of the fixed size
        count = max(1, count // job.fixed_batch) * job.fixed_batch
    images = torch.randn(count, config.in_chans, *config.image_size, generator=generator)
    with torch.inference_mode():
        return images, job.net(images).float()


def _run_onnx(path: Path, images: torch.Tensor) -> Any:
    """``path``'s logits for ``images`` in onnxruntime on the CPU, in batches it accepts."""
    ort = import_onnxruntime("exporting to ONNX")
    try:
        session = _cpu_session(path)
        batch = session.get_inputs()[0].shape[0]
        step = batch if isinstance(batch, int) else len(images)
        import numpy as np

        return np.concatenate(
            [session.run(None, {INPUT_NAME: part.numpy()})[0] for part in images.split(step)]
        )
    except Exception as exc:  # onnxruntime's own exception types
        raise ExportCheckError(
            f"onnxruntime {ort.__version__} cannot run the int8 file: {_line(exc)}"
        ) from exc


def _time_onnx(job: _Job, written: list[_Written]) -> dict[str, float]:
    """Median milliseconds per batch of each written ONNX form in onnxruntime on the CPU."""
    images = job.checks[0][0].numpy()
    timings = {}
    for item in written:
        session = _cpu_session(item.staged)
        session.run(None, {INPUT_NAME: images})  # warm-up: allocations, kernel selection
        runs = []
        for _ in range(AUTO_TIMING_RUNS):
            start = time.perf_counter()
            session.run(None, {INPUT_NAME: images})
            runs.append((time.perf_counter() - start) * 1000)
        timings[item.form] = statistics.median(runs)
    return timings


# ---------------------------------------------------------------------------- arguments
def _check_choice(param: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(
            f"unknown {param} {value!r}: expected one of {', '.join(choices)}", param=param
        )


def _check_format(file_format: str | None, output: Path) -> str:
    """The format asked for, or the one ``output``'s suffix names (.onnx or .pt2)."""
    implied = SUFFIXES.get(output.suffix.lower())
    if file_format is None:
        if implied is None:
            raise UsageError(
                f"output {output.name!r} names no format: end it in .onnx or .pt2, or pass format",
                param=("output", "format"),
            )
        return implied
    file_format = str(file_format).lower()
    _check_choice("format", file_format, FORMATS)
    if implied is not None and implied != file_format:
        raise UsageError(
            f"format {file_format} does not suit {output.name}, a .{implied} name: "
            f"name the file .{file_format}",
            param="format",
        )
    return file_format


def _check_batch(batch_size: int | None, dynamic_batch: bool | None) -> int | None:
    """The fixed batch size, or ``None`` for a dynamic batch dimension (the default)."""
    if batch_size is not None and dynamic_batch:
        raise UsageError(
            "batch_size fixes the batch dimension, dynamic_batch leaves it free: pass one",
            param=("batch_size", "dynamic_batch"),
        )
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}", param="batch_size")
    if batch_size is None and dynamic_batch is False:
        return 1
    return batch_size


def _check_opset(opset: int | None, file_format: str) -> int | None:
    if opset is None:
        return None
    if file_format != "onnx":
        raise UsageError(f"opset applies to ONNX files, not {file_format}", param="opset")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"opset must be from {MIN_OPSET} to {newest} (this onnx), got {opset}",
            param="opset",
        )
    return opset


def _require_onnx_exporter() -> None:
    """onnx and onnxscript (the dynamo exporter) and onnxruntime (the check), or exit 2."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise MissingDependencyError("exporting to ONNX", "export") from None
    import_onnxruntime("exporting to ONNX")


# ---------------------------------------------------------------------------- the model
def _model_to_export(
    model: str | Path | GFNetArchitecture | OnnxModel, img_size: int | tuple[int, int] | None
) -> GFNetArchitecture:
    """A private copy in eval mode on the CPU, native at ``img_size``, without gradients.

    Native means the resized filters and position embedding are the weights: nothing is
    resized inside the exported graph.
    """
    if isinstance(model, GFNetArchitecture):
        net = copy.deepcopy(model).cpu()
    elif is_onnx_file(model) or isinstance(model, OnnxModel):
        raise UsageError(
            f"{model} is an exported file already: export from its MODEL folder", param="model"
        )
    else:
        net = load_model(str(model), device="cpu")
    net.eval()
    net.requires_grad_(False)
    if img_size is not None:
        size = to_pair(img_size)
        try:
            net.config.check_image_size(size)
        except ConfigError as exc:
            raise ConfigError(str(exc), param="img_size") from None
        if size != net.config.image_size:
            net.set_image_size(size)
            net.requires_grad_(False)
    return net


def _check_inputs(
    net: GFNetArchitecture, fixed_batch: int | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic inputs (normalized images look standard normal) and PyTorch's logits.

    The reference is the model as it runs eagerly (FFT form, the fast CPU path included).
    """
    generator = torch.Generator().manual_seed(0)
    sizes = (fixed_batch,) if fixed_batch is not None else DYNAMIC_CHECK_BATCHES
    checks = []
    with torch.inference_mode():
        for size in sizes:
            images = torch.randn(
                size, net.config.in_chans, *net.config.image_size, generator=generator
            )
            checks.append((images, net(images).float()))
    return checks


# ---------------------------------------------------------------------------- writing
class _Steps:
    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self.progress, self.total, self.count = progress, total, 0

    def done(self) -> None:
        self.count += 1
        if self.progress is not None:
            self.progress(min(self.count, self.total), self.total)

    def finish(self) -> None:
        """All done (``auto`` keeping the native form skips the fallback's steps)."""
        if self.progress is not None and self.count < self.total:
            self.progress(self.total, self.total)


def _write_checked(job: _Job, form: str, steps: _Steps) -> tuple[Path, float, int | None]:
    """Write ``form`` to a temporary file beside ``output`` and check it against PyTorch.

    Returns the file, the largest logit difference and the opset written; the file is
    removed when anything fails.
    """
    net, output = job.net, job.output
    output.parent.mkdir(parents=True, exist_ok=True)
    # hidden, and ending in the format's suffix (torch.export.save insists on .pt2)
    handle, name = tempfile.mkstemp(
        prefix=f".{output.name}.", suffix=f".partial.{job.file_format}", dir=output.parent
    )
    os.close(handle)
    staged = Path(name)
    metadata = export_metadata(net.config, fft=form, batch_size=job.fixed_batch)
    try:
        if job.file_format == "onnx":
            opset_written = _write_onnx(net, form, staged, metadata, job.fixed_batch, job.opset)
            steps.done()
            diff = _check_onnx(staged, job.checks)
        else:
            opset_written = None
            _write_pt2(net, form, staged, metadata, job.fixed_batch)
            steps.done()
            diff = _check_pt2(staged, job.checks)
        steps.done()
        largest = max(float(ref.abs().max()) for _, ref in job.checks)
        tolerance = CHECK_TOLERANCE * max(1.0, largest)
        if not diff <= tolerance:
            raise ExportCheckError(
                f"the {form} export's logits differ from PyTorch's by {diff:.3g} "
                f"(tolerance {tolerance:.3g})"
            )
        return staged, diff, opset_written
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def _trace_input(net: GFNetArchitecture, fixed_batch: int | None) -> torch.Tensor:
    batch = fixed_batch if fixed_batch is not None else TRACE_BATCH
    return torch.zeros(batch, net.config.in_chans, *net.config.image_size)


def _dynamic_shapes(fixed_batch: int | None) -> tuple[dict[int, Any]] | None:
    if fixed_batch is not None:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)


@contextlib.contextmanager
def _traceable(net: GFNetArchitecture, form: str, example: torch.Tensor) -> Iterator[None]:
    """The plain graph of ``form``: fused CPU kernels off, the filter in ``form``, and the
    exporters' chatter (warnings, logs, prints) kept off stdout and stderr."""
    layer_form = "fft" if form == "native" else "matmul"
    noisy = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [log.level for log in noisy]
    chatter = io.StringIO()
    with fused_inference(False), filter_form(layer_form), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if layer_form == "matmul":
            with torch.inference_mode():
                net(example)  # DFT tables built eagerly: the trace embeds them as constants
        for log in noisy:
            log.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(chatter):
                yield
        finally:
            for log, level in zip(noisy, levels, strict=True):
                log.setLevel(level)
            if chatter.getvalue().strip():
                logger.debug("exporter output:\n%s", chatter.getvalue())


def _write_onnx(
    net: GFNetArchitecture,
    form: str,
    path: Path,
    metadata: dict[str, Any],
    fixed_batch: int | None,
    opset: int | None,
) -> int:
    import onnx

    example = _trace_input(net, fixed_batch)
    try:
        with _traceable(net, form, example):
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(fixed_batch),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                verbose=False,
            )
            proto = program.model_proto
    except Exception as exc:  # the exporter's many error types: one line, keep going
        raise ExportCheckError(f"torch.onnx cannot export the {form} form: {_line(exc)}") from exc
    for key, value in metadata_props(metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"GFNet ({net.config.describe()}); global filter: {form}. Written by gfnet export."
    )
    proto.producer_name, proto.producer_version = "gfnet-cli", __version__
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportCheckError(f"onnx.checker rejects the {form} form: {_line(exc)}") from exc
    write_bytes(path, proto.SerializeToString())
    return next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


def _cpu_session(path: Path) -> Any:
    """An onnxruntime session for ``path`` on the CPU, its warnings silenced (errors raise)."""
    ort = import_onnxruntime("exporting to ONNX")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def _check_onnx(path: Path, checks: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Run the file in onnxruntime on the CPU; the largest difference from PyTorch."""
    ort = import_onnxruntime("exporting to ONNX")
    try:
        session = _cpu_session(path)
        diffs = [
            max_abs_diff(ref, session.run(None, {INPUT_NAME: images.numpy()})[0])
            for images, ref in checks
        ]
    except Exception as exc:  # onnxruntime's own exception types
        raise ExportCheckError(
            f"onnxruntime {ort.__version__} cannot run it: {_line(exc)}"
        ) from exc
    return max(diffs)


def _write_pt2(
    net: GFNetArchitecture, form: str, path: Path, metadata: dict[str, Any], fixed_batch: int | None
) -> None:
    example = _trace_input(net, fixed_batch)
    try:
        with _traceable(net, form, example):
            program = torch.export.export(
                net, (example,), dynamic_shapes=_dynamic_shapes(fixed_batch)
            )
    except Exception as exc:
        raise ExportCheckError(f"torch.export cannot export the {form} form: {_line(exc)}") from exc
    # Into memory, then written by Python: torch's file writer aborts the process (exit 134)
    # on a full disk, where Python's raises an OSError we can report.
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PT2_EXTRA_FILE: json.dumps(metadata)})
    write_bytes(path, buffer.getvalue())


def _check_pt2(path: Path, checks: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Reload the program with ``torch.export.load`` and run it: the largest difference."""
    try:
        module = torch.export.load(str(path)).module()
        with torch.inference_mode():
            return max(max_abs_diff(ref, module(images)) for images, ref in checks)
    except Exception as exc:
        raise ExportCheckError(
            f"the saved program cannot be reloaded and run: {_line(exc)}"
        ) from exc


def _publish(staged: Path, output: Path, overwrite: bool) -> None:
    """Rename the checked file into place (an existing one only with ``overwrite``)."""
    try:
        if output.exists() and not overwrite:  # appeared while exporting
            raise UsageError(
                f"{output} already exists: choose another name or pass overwrite",
                param=("output", "overwrite"),
            )
        publish_file(staged, output)
    finally:
        staged.unlink(missing_ok=True)


def _line(exc: BaseException) -> str:
    """The informative line of an exporter's or runtime's long message.

    torch.onnx wraps the cause in advice; its "Exception summary" names the cause.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "## Exception summary" in lines[:-1]:
        return lines[lines.index("## Exception summary") + 1][:300]
    return first_line(exc)
