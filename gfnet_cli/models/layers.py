"""Building blocks of GFNet, keeping the authors' parameter names.

Tokens travel through a block as a (B, H, W, C) grid: LayerNorm and the MLP act on the last
axis, the global filter's FFT on axes 1 and 2, so no reshapes are needed between them.

Inference on the CPU (no autograd, eval mode) takes a fused path (docs/architecture.md):
oneDNN's linear with GELU and residual-add post-ops, the FFT in channels-first memory so
PyTorch's FFT makes no hidden copies, and under bf16 autocast weights cast once and cached.
The arithmetic is the same as the plain path, which training and other devices use.

Every global filter runs in one of two forms: ``torch.fft`` (``"fft"``) or products with
precomputed DFT matrices (``"matmul"``, also what exporters trace for runtimes without FFT
operators): the same transform, exact up to float rounding (docs/export.md). By default
(``"auto"``) each filter times both forms once per process for its input's shape, dtype,
device and autograd need, as cuDNN's benchmark mode does, and keeps the faster
(docs/architecture.md); ``filter_form("fft")`` / ``("matmul")`` fix the form. Under bf16
autocast the matmul form multiplies in bf16 up to :data:`BF16_DFT_MAX_TOKENS` tokens.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

log = logging.getLogger(__name__)

_FUSED_ENABLED = True
FILTER_FORMS = ("auto", "fft", "matmul")
_FILTER_FORM = "auto"
# "auto" times each form this many times (interleaved, the fastest run counts): a few
# milliseconds once per shape, in exchange for the faster form for the rest of the process.
AUTO_TRIALS = 3
# ... and takes the matmul form only when it measured at least this much faster than the FFT
# form (its time below this share of the FFT's): timed alone, with its input in cache, the
# matmul form looks better than it does inside a model (docs/benchmarks.md: whole models ran
# up to 11 % slower with picks made on smaller margins), and a near tie flips between runs.
AUTO_MATMUL_MARGIN = 0.85
# Under bf16 autocast the matmul form's DFT products run in bf16 on grids up to this many
# tokens (docs/benchmarks.md: top-1 and logit error against fp32); larger grids keep fp32.
BF16_DFT_MAX_TOKENS = 64 * 64
_BF16_DFT = True


def _has_onednn_linear() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(
            torch.ops.mkldnn, "_linear_pointwise"
        )
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


_HAS_ONEDNN_LINEAR = _has_onednn_linear()


@contextlib.contextmanager
def fused_inference(enabled: bool) -> Iterator[None]:
    """Switch the fused CPU inference path on or off (benchmarks and parity tests)."""
    global _FUSED_ENABLED
    previous, _FUSED_ENABLED = _FUSED_ENABLED, enabled
    try:
        yield
    finally:
        _FUSED_ENABLED = previous


@contextlib.contextmanager
def filter_form(form: str) -> Iterator[None]:
    """Compute every :class:`GlobalFilter` with ``torch.fft`` (``"fft"``), as products with
    DFT matrices (``"matmul"``), or in whichever of the two measured faster (``"auto"``, the
    default).

    The matmul form is what ``gfnet export --fft matmul`` traces: a graph of matrix products
    that any ONNX runtime, TensorRT or mobile runtime runs, where FFT operators are missing
    or wrong. It is the same arithmetic as the FFT form, up to float rounding.
    """
    global _FILTER_FORM
    if form not in FILTER_FORMS:
        raise ValueError(f"unknown filter form {form!r}: expected one of {', '.join(FILTER_FORMS)}")
    previous, _FILTER_FORM = _FILTER_FORM, form
    try:
        yield
    finally:
        _FILTER_FORM = previous


@contextlib.contextmanager
def bf16_dft(enabled: bool) -> Iterator[None]:
    """Let the matmul form multiply in bf16 under bf16 autocast (the default), or keep fp32."""
    global _BF16_DFT
    previous, _BF16_DFT = _BF16_DFT, enabled
    try:
        yield
    finally:
        _BF16_DFT = previous


# ``"auto"``'s measured choices: (device, index, (rows, cols, C), batch bucket, dtype,
# autocast dtype, backward, fused, bf16 DFT) -> "fft" | "matmul".
_FORM_CHOICES: dict[tuple, str] = {}
_FORM_RECORDERS: list[set[str]] = []


def filter_form_choices(*, training: bool | None = None) -> dict[str, str]:
    """What ``"auto"`` chose so far in this process, one readable line per measured case
    (``training``: only the forward+backward cases, or only the forward ones)."""
    choices = {}
    for key, form in _FORM_CHOICES.items():
        device, index, (rows, cols, channels), bucket, dtype, autocast, backward = key[:7]
        if training is not None and backward != training:
            continue
        where = device if index is None else f"{device}:{index}"
        precision = str(autocast or dtype).replace("torch.", "")
        mode = "forward+backward" if backward else "forward"
        batch = "any batch" if backward else f"batch<={bucket}"
        name = f"{where} {rows}x{cols}x{channels} {batch} {precision} {mode}"
        choices[name] = form
    return choices


def filter_form_state() -> list[list[Any]]:
    """``"auto"``'s choices as plain values, for a training checkpoint: a resumed run takes
    them back (:func:`load_filter_form_state`) and runs each filter in the form the run it
    continues used, so the two round alike and end with the same weights."""
    state = []
    for key, form in _FORM_CHOICES.items():
        device, index, shape, bucket, dtype, autocast, *flags = key
        autocast_name = None if autocast is None else str(autocast)
        state.append([device, index, list(shape), bucket, str(dtype), autocast_name, *flags,
                      form])  # fmt: skip
    return state


def load_filter_form_state(state: Sequence[Sequence[Any]]) -> None:
    """Take back :func:`filter_form_state`'s choices (over those measured for the same
    cases); an entry this version cannot read is left to be measured again."""
    for entry in state:
        try:
            device, index, shape, bucket, dtype, autocast, *flags, form = entry
            key = (str(device), index, tuple(int(n) for n in shape), int(bucket),
                   _dtype_named(dtype), None if autocast is None else _dtype_named(autocast),
                   *(bool(flag) for flag in flags))  # fmt: skip
        except (TypeError, ValueError):
            continue
        if form in ("fft", "matmul") and len(key) == _FORM_KEY_LENGTH:
            _FORM_CHOICES[key] = form


_FORM_KEY_LENGTH = 9


def _dtype_named(name: Any) -> torch.dtype:
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a dtype: {name!r}")
    return dtype


def clear_filter_form_choices() -> None:
    """Forget ``"auto"``'s choices: the next forward of each shape measures again."""
    _FORM_CHOICES.clear()


@contextlib.contextmanager
def record_filter_forms() -> Iterator[set[str]]:
    """Collect the forms every :class:`GlobalFilter` ran with inside the block."""
    forms: set[str] = set()
    _FORM_RECORDERS.append(forms)
    try:
        yield forms
    finally:
        _FORM_RECORDERS.remove(forms)


def _is_tracing(x: torch.Tensor) -> bool:
    """Inside a trace or CUDA graph capture, a fake tensor or a dispatch mode (FLOP counting):
    timing is impossible or means nothing."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return True
    if torch.jit.is_tracing():  # the legacy tracer would record both trial forms
        return True
    if x.is_cuda and torch.cuda.is_current_stream_capturing():  # no syncs inside a CUDA graph
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    if is_exporting is not None and is_exporting():
        return True
    return type(x) is not torch.Tensor and not isinstance(x, nn.Parameter)  # fake, functional


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _compute_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype the fused CPU path would compute the MLP in, or None when it must not run.

    It runs for CPU tensors outside autograd, in fp32, or in bf16 under CPU autocast (where
    oneDNN has native bf16 kernels).
    """
    if not (_FUSED_ENABLED and _HAS_ONEDNN_LINEAR) or x.device.type != "cpu":
        return None
    if torch.compiler.is_compiling():  # inductor fuses the plain graph itself
        return None
    if torch.is_grad_enabled() and x.requires_grad:
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        if dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return dtype
        return None
    return x.dtype if x.dtype == torch.float32 else None


# Inference copies of parameters (bf16 casts, oneDNN-packed weights), kept beside the module
# (keyed by the parameter's id, dropped when it dies) so they never travel with it through
# deepcopy, pickling or state_dict. (Tensors cannot key a WeakKeyDictionary: == is elementwise.)
_PREPARED: dict[tuple[int, torch.dtype, bool], tuple] = {}


def _prepared(param: torch.Tensor | None, dtype: torch.dtype, pack: bool = False):
    """``param`` cast to ``dtype`` (and packed for oneDNN's linear), made once per version."""
    if param is None:
        return None
    if param.dtype == dtype and not pack:
        return param
    slot = (id(param), dtype, pack)
    version = (param._version, param.data_ptr())
    entry = _PREPARED.get(slot)
    if entry is None or entry[0] != version:
        if entry is None:
            weakref.finalize(param, _PREPARED.pop, slot, None)
        value = param.detach().to(dtype)
        if pack:
            value = torch.ops.mkldnn._reorder_linear_weight(value)
        entry = (version, value)
        _PREPARED[slot] = entry
    return entry[1]


def resize_filter(weight: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a (h, w//2+1, C, 2) filter to the half-spectrum of a ``grid`` token grid.

    The authors' fine-tuning recipe: bicubic with ``align_corners=True`` over the stored
    half-spectrum, to (rows, cols // 2 + 1).
    """
    rows, cols = grid
    target = (rows, cols // 2 + 1)
    if tuple(weight.shape[:2]) == target:
        return weight
    height, width, channels, _ = weight.shape
    planes = weight.reshape(1, height, width, channels * 2).permute(0, 3, 1, 2)
    planes = F.interpolate(planes.float(), size=target, mode="bicubic", align_corners=True)
    return planes.permute(0, 2, 3, 1).reshape(target[0], target[1], channels, 2).to(weight.dtype)


def resize_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a (1, N, C) position embedding between token grids (bicubic, corners free)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    channels = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False)
    return (
        grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], channels).to(pos_embed.dtype)
    )


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (meta, for FLOP counting)
        return False


class DFTBases(NamedTuple):
    """Real matrices of the orthonormal 2-D real DFT of a (rows, cols) grid and its inverse.

    Complex values are pairs of reals, and each matrix multiplies such pairs in one product.
    With ``k = cols // 2 + 1`` half-spectrum columns (what ``rfft2`` keeps):

    - ``rows_forward`` (2·rows, rows): the full DFT over rows of a real input; output rows
      interleave real and imaginary parts (``2m``, ``2m+1``), so (B, 2·rows, cols·C) reads as
      (B, rows, 2·cols, C): each row's real plane, then its imaginary plane;
    - ``cols_forward`` (2·k, 2·cols): the half-spectrum DFT over columns of those complex
      rows, ``[[cos, sin], [-sin, cos]]`` blocks: real parts of the k bins, then imaginary;
    - ``cols_inverse`` (2·cols, 2·k): the Hermitian inverse over columns, each bin weighted by
      how many bins of the full spectrum it stands for (1 for DC and, with even ``cols``, the
      Nyquist bin, else 2); their sine terms (sin 0, sin pi*w) are exact zeros;
    - ``rows_inverse`` (rows, 2·rows): the inverse over rows, keeping the real part.

    Every matrix carries its axis's ``1/sqrt(n)`` (``norm="ortho"``).
    """

    rows_forward: torch.Tensor
    cols_forward: torch.Tensor
    cols_inverse: torch.Tensor
    rows_inverse: torch.Tensor


# Bases per (grid, device): a few KB each, shared by every filter of that grid.
_DFT_BASES: dict[tuple, DFTBases] = {}


def _cos_sin(freqs: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of ``2*pi*f*t/size`` as (freqs, count) float64 tables.

    The phase is reduced exactly (``f*t mod size`` in integers) and values that are zero in
    exact arithmetic (sin at 0 and pi, cos at pi/2) are set to zero, not left at 1e-16.
    """
    products = torch.outer(torch.arange(freqs), torch.arange(count)) % size
    phase = products.to(torch.float64) * (2 * math.pi / size)
    cos, sin = phase.cos(), phase.sin()
    cos[(4 * products) % (2 * size) == size] = 0.0  # 2*pi*p/size = pi/2 or 3*pi/2
    sin[(2 * products) % size == 0] = 0.0  # 2*pi*p/size = 0 or pi
    return cos, sin


def _interleave(real: torch.Tensor, imag: torch.Tensor, dim: int) -> torch.Tensor:
    """``real`` and ``imag`` alternating along ``dim``: r0, i0, r1, i1, ..."""
    return torch.stack((real, imag), dim=dim + 1).flatten(dim, dim + 1)


def dft_bases(
    grid: tuple[int, int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DFTBases:
    """The :class:`DFTBases` of a token ``grid`` in ``dtype`` (computed in float64, cached).

    Built outside a trace, they are real tensors an exporter embeds as constants. Inside one
    (``torch.export``, ``torch.compile``) they are traced ops the exporter folds, and are not
    cached: a traced table must never reach an eager forward.
    """
    rows, cols = (int(v) for v in grid)
    key = (rows, cols, str(device)) if dtype == torch.float32 else (rows, cols, str(device), dtype)
    bases = _DFT_BASES.get(key)
    if bases is None:
        half = cols // 2 + 1
        row_cos, row_sin = _cos_sin(rows, rows, rows)  # (m, h), symmetric
        col_cos, col_sin = _cos_sin(half, cols, cols)  # (k, w)
        weight = torch.full((half, 1), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if cols % 2 == 0:
            weight[-1] = 1.0
        inv_cos, inv_sin = (col_cos * weight).T, (col_sin * weight).T  # (w, k)
        tables = (
            _interleave(row_cos, -row_sin, dim=0) / math.sqrt(rows),
            torch.cat((torch.cat((col_cos, col_sin), 1), torch.cat((-col_sin, col_cos), 1)))
            / math.sqrt(cols),
            torch.cat((torch.cat((inv_cos, -inv_sin), 1), torch.cat((inv_sin, inv_cos), 1)))
            / math.sqrt(cols),
            _interleave(row_cos, -row_sin, dim=1) / math.sqrt(rows),
        )
        # normal tensors even when first built under inference_mode: training reuses them
        with torch.inference_mode(False):
            bases = DFTBases(*(t.to(device=device, dtype=dtype) for t in tables))
        if not torch.compiler.is_compiling():
            _DFT_BASES[key] = bases
    return bases


def filter_by_matmul(x: torch.Tensor, weight: torch.Tensor, bases: DFTBases) -> torch.Tensor:
    """``irfft2(rfft2(x) * weight)`` over axes 1-2 (``norm="ortho"``) as matrix products.

    ``x``: (B, rows, cols, C), in the dtype of ``bases``; ``weight``: the filter's
    (rows, cols//2+1, C, 2) real and imaginary parts. Four matrix products, no complex
    tensors, no transposes and no splits: every intermediate is a view of the previous
    product's output. Multiply-adds per image and channel: 4·rows²·cols + 8·rows·cols·(cols//2+1).
    """
    batch, rows, cols, channels = x.shape
    half = cols // 2 + 1
    # over rows: (B, rows, cols*C) -> (B, 2*rows, cols*C) = (B, rows, [re, im] x cols, C)
    planes = torch.matmul(bases.rows_forward, x.reshape(batch, rows, cols * channels))
    planes = planes.reshape(batch, rows, 2 * cols, channels)
    # over columns: (B, rows, [re, im] x half, C)
    spectrum = torch.matmul(bases.cols_forward, planes).reshape(batch, rows, 2, half, channels)
    # the filter, a complex product: (a + ib)(c + id) = [a, b] * [c, c] + [b, a] * [-d, d]
    if torch.compiler.is_exporting():
        # a file stores the filter once: its planes broadcast, the sign a 2-value constant
        real, imag = weight[..., 0].unsqueeze(1), weight[..., 1].unsqueeze(1)
        sign = torch.tensor([-1.0, 1.0], dtype=spectrum.dtype, device=spectrum.device)
        spectrum = torch.addcmul(spectrum * real, spectrum.flip(2) * sign.view(2, 1, 1), imag)
    else:
        same, swapped = filter_pairs(weight)
        spectrum = torch.addcmul(spectrum * same, spectrum.flip(2), swapped)
    # inverse over columns, then over rows keeping the real part
    planes = torch.matmul(bases.cols_inverse, spectrum.reshape(batch, rows, 2 * half, channels))
    planes = planes.reshape(batch, 2 * rows, cols * channels)
    return torch.matmul(bases.rows_inverse, planes).reshape(batch, rows, cols, channels)


def filter_pairs(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (rows, half, C, 2) filter as the (rows, 2, half, C) factors of its complex product.

    ``(a + ib)(c + id)`` is ``[a, b] * [c, c] + [b, a] * [-d, d]``: this returns ``[c, c]`` and
    ``[-d, d]``.
    """
    real, imag = weight[..., 0], weight[..., 1]  # (rows, half, C)
    return torch.stack((real, real), dim=1), torch.stack((-imag, imag), dim=1)


class _PerSizeCache:
    """Remembers tensors derived from a parameter, per input size, until the parameter changes.

    Resizing filters on every forward would waste time at inference; caching them while
    gradients flow would cut the graph, so the cache is used only outside autograd. Under
    ``torch.compile`` it is bypassed too: reading ``_version``/``data_ptr()`` and a dict keyed
    by them breaks the graph at every layer (and recompiles), while the resize traced into the
    graph is computed once per call at negligible cost.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, torch.Tensor] = {}

    def get(self, param: torch.Tensor, key: tuple, compute) -> torch.Tensor:
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and param.requires_grad):
            return compute()
        full_key = (key, param._version, param.data_ptr(), param.dtype, param.device)
        value = self._entries.get(full_key)
        if value is None:
            self._entries = {k: v for k, v in self._entries.items() if k[1:] == full_key[1:]}
            value = compute()
            self._entries[full_key] = value
        return value

    def clear(self) -> None:
        self._entries.clear()


class GlobalFilter(nn.Module):
    """Token mixing by a learned filter in the frequency domain (the paper's eq. 3).

    ``complex_weight`` holds the filter for the half-spectrum of the model's native grid, as
    real and imaginary parts. An input on another grid uses the filter resized the way the
    authors fine-tune to a new resolution.
    """

    def __init__(self, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        rows, cols = grid
        self.grid = (rows, cols)
        weight = torch.empty(rows, cols // 2 + 1, dim, 2)
        if not weight.is_meta:  # see GFNet.reset_parameters: nothing to draw on meta
            weight.normal_().mul_(0.02)  # the same draws as randn(...) * 0.02
        self.complex_weight = nn.Parameter(weight)
        self._resized = _PerSizeCache()

    def filter_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """The complex filter for a token grid of ``grid`` (cached outside training)."""
        if tuple(grid) == self.grid:
            return torch.view_as_complex(self.complex_weight.float())
        return self._resized.get(
            self.complex_weight,
            tuple(grid),
            lambda: torch.view_as_complex(resize_filter(self.complex_weight.float(), grid)),
        )

    def filter_planes(
        self, grid: tuple[int, int], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """The filter for ``grid`` as real and imaginary planes (rows, cols//2+1, C, 2)."""
        if tuple(grid) == self.grid:
            return self.complex_weight.to(dtype)
        return self._resized.get(
            self.complex_weight,
            ("planes", *grid, dtype),
            lambda: resize_filter(self.complex_weight.float(), grid).to(dtype),
        )

    def filter_channels_first(self, grid: tuple[int, int]) -> torch.Tensor:
        """The filter as (C, rows, cols//2+1), for FFTs over the last two axes (cached)."""
        return self._resized.get(
            self.complex_weight,
            ("channels_first", *grid),
            lambda: self.filter_for(grid).permute(2, 0, 1).contiguous(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        form = _FILTER_FORM if _FILTER_FORM != "auto" else self._auto_form(x)
        if _FORM_RECORDERS and not torch.compiler.is_compiling():
            for recorder in _FORM_RECORDERS:
                recorder.add(form)
        if form == "matmul":
            return self._forward_matmul(x)
        return self._forward_fft(x)

    def _auto_form(self, x: torch.Tensor) -> str:
        """The faster form for ``x``'s case, measured on its first forward (module docstring).

        Traces (compile, export), fake and meta tensors and devices other than CPU and CUDA
        take the FFT form without measuring.
        """
        if x.device.type not in ("cpu", "cuda") or _is_tracing(x):
            return "fft"
        backward = torch.is_grad_enabled() and (
            x.requires_grad or self.complex_weight.requires_grad
        )
        autocast = (
            torch.get_autocast_dtype(x.device.type) if _autocast_enabled(x.device.type) else None
        )
        key = (
            x.device.type,
            x.device.index,
            tuple(x.shape[1:]),
            # the batch rounded up to a power of two; a training choice holds for any batch
            # (the last, smaller one too): the first step decides every later one, so a
            # checkpoint taken after it records all of them (filter_form_state)
            0 if backward else 1 << (x.shape[0] - 1).bit_length(),
            x.dtype,
            autocast,
            backward,
            _FUSED_ENABLED and _HAS_ONEDNN_LINEAR,
            _BF16_DFT,
        )
        form = _FORM_CHOICES.get(key)
        if form is None:
            form = self._measure_forms(x, backward)
            _FORM_CHOICES[key] = form
        return form

    def _measure_forms(self, x: torch.Tensor, backward: bool) -> str:
        """The form whose fastest of :data:`AUTO_TRIALS` runs (with backward when training)
        is faster on ``x``, the matmul form only by :data:`AUTO_MATMUL_MARGIN`; the
        parameter's ``.grad`` is left alone."""
        x = x.detach().requires_grad_(backward and x.requires_grad)
        inputs = [t for t in (x, self.complex_weight) if t.requires_grad]
        best = {"fft": math.inf, "matmul": math.inf}
        for _ in range(AUTO_TRIALS):
            for form in best:
                _synchronize(x.device)
                start = time.perf_counter()
                out = self._forward_matmul(x) if form == "matmul" else self._forward_fft(x)
                if backward:
                    torch.autograd.grad(out, inputs, torch.ones_like(out))
                _synchronize(x.device)
                best[form] = min(best[form], time.perf_counter() - start)
        form = "matmul" if best["matmul"] < AUTO_MATMUL_MARGIN * best["fft"] else "fft"
        log.debug(
            "filter %s on %s: fft %.3g ms, matmul %.3g ms -> %s",
            tuple(x.shape),
            x.device,
            best["fft"] * 1e3,
            best["matmul"] * 1e3,
            form,
        )
        return form

    def _forward_fft(self, x: torch.Tensor) -> torch.Tensor:
        _, rows, cols, _ = x.shape
        dtype = x.dtype
        compute_dtype = _compute_dtype(x)
        if compute_dtype is not None:
            # PyTorch's CPU FFT transforms the last axes: hand it (B, C, H, W) memory ourselves
            # (one copy each way) instead of letting it copy complex spectra in and out. The
            # copy back to (B, H, W, C) also casts to the MLP's dtype (bf16 under autocast).
            planes = x.float().permute(0, 3, 1, 2).contiguous()
            spectrum = torch.fft.rfft2(planes, norm="ortho")
            spectrum.mul_(self.filter_channels_first((rows, cols)))
            planes = torch.fft.irfft2(spectrum, s=(rows, cols), norm="ortho")
            return planes.permute(0, 2, 3, 1).to(
                compute_dtype, memory_format=torch.contiguous_format
            )
        spectrum = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")
        spectrum = spectrum * self.filter_for((rows, cols))
        x = torch.fft.irfft2(spectrum, s=(rows, cols), dim=(1, 2), norm="ortho")
        return x.to(dtype)

    def _forward_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The matmul form, in bf16 under bf16 autocast on grids that allow it, else in fp32.

        A bf16 transform returns bf16, as the fused FFT path does under autocast (the next
        LayerNorm takes either); otherwise the output has ``x``'s dtype.
        """
        grid = (x.shape[1], x.shape[2])
        if not _autocast_enabled(x.device.type):
            planes = self.filter_planes(grid)
            return filter_by_matmul(x.float(), planes, dft_bases(grid, x.device)).to(x.dtype)
        dtype = torch.float32
        if (
            _BF16_DFT
            and torch.get_autocast_dtype(x.device.type) == torch.bfloat16
            and grid[0] * grid[1] <= BF16_DFT_MAX_TOKENS
        ):
            dtype = torch.bfloat16
        planes = self.filter_planes(grid, dtype)
        with torch.autocast(x.device.type, enabled=False):  # the dtype is chosen above
            out = filter_by_matmul(x.to(dtype), planes, dft_bases(grid, x.device, dtype))
        return out if dtype == torch.bfloat16 else out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, dim={self.complex_weight.shape[2]}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``fc2(gelu(fc1(x)))``, plus ``residual`` when given (fused on the CPU path)."""
        dtype = None if self.training else _compute_dtype(x)
        if dtype is not None and self._fusable():
            return self._forward_fused(x, residual, dtype)
        out = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return out if residual is None else residual + out

    def _fusable(self) -> bool:
        """Both layers plain ``nn.Linear`` with tensor weights: not a user's replacement (say,
        ``torch.ao.quantization.quantize_dynamic``'s, whose ``weight`` is a method), which
        must run as itself."""
        return all(
            type(layer) is nn.Linear and isinstance(layer.weight, torch.Tensor)
            for layer in (self.fc1, self.fc2)
        )

    def _forward_fused(
        self, x: torch.Tensor, residual: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        # oneDNN computes bias + erf-GELU inside fc1's matmul, and bias + residual inside fc2's.
        linear = torch.ops.mkldnn._linear_pointwise
        tokens = x.reshape(-1, x.shape[-1]).to(dtype)
        w1, b1 = _prepared(self.fc1.weight, dtype, pack=True), _prepared(self.fc1.bias, dtype)
        w2, b2 = _prepared(self.fc2.weight, dtype, pack=True), _prepared(self.fc2.bias, dtype)
        hidden = linear(tokens, w1, b1, "gelu", [], "none")
        if residual is not None and residual.dtype == dtype and residual.is_contiguous():
            out = linear.binary(hidden, residual.reshape(-1, residual.shape[-1]), w2, b2, "add")
            return out.view(residual.shape)
        out = linear(hidden, w2, b2, "none", [], "")
        out = out.view(*x.shape[:-1], out.shape[-1])
        return out if residual is None else residual + out


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """One GFNet block: a single residual around filter and MLP.

    ``x + drop_path(gamma * mlp(norm2(filter(norm1(x)))))``; ``gamma`` (layer scale) exists
    only in pyramid blocks.
    """

    def __init__(
        self,
        dim: int,
        grid: tuple[int, int],
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = GlobalFilter(dim, grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if init_values is not None:
            self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.register_parameter("gamma", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma is None and isinstance(self.drop_path, nn.Identity):
            # x + mlp(...): the MLP adds the residual itself (fused into fc2 on the CPU path)
            return self.mlp(self.norm2(self.filter(self.norm1(x))), residual=x)
        branch = self.mlp(self.norm2(self.filter(self.norm1(x))))
        if self.gamma is not None:
            branch = self.gamma * branch
        return x + self.drop_path(branch)


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: a strided convolution, output (B, H, W, C)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: the residual stream stays dense, so fused kernels can add into it
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class DownLayer(nn.Module):
    """Between pyramid stages: a 2x2 stride-2 convolution on the (B, H, W, C) grid."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim_out, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous()
