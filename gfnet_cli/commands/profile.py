"""``gfnet profile`` and ``gfnet models``: parameters, GFLOPs, latency, throughput, memory.

The paper's Figure 2 claim, measured on the user's machine: a GFNet's cost grows log-linearly
with the number of tokens, self-attention's and a token-mixing MLP's quadratically. Besides
the GFNet, ``compare=("vit", "resmlp")`` profiles baselines of the same width and depth:

- ``vit``: a ViT/DeiT block stack, explicit softmax attention with ``width // 64`` heads
  (as the paper's DeiT baselines compute it);
- ``resmlp``: a ResMLP stack, whose token mixing is one linear layer over all tokens.

What tells the three apart is the token mixer (:attr:`ModelSpec.mixer`): the global filter,
self-attention, or a token-mixing MLP. With ``task="segmentation"`` every model carries the
same Semantic FPN head (:mod:`gfnet_cli.models.segmentation`): the GFNet its own pyramid (or
a flat GFNet's simple feature pyramid), a baseline the simple feature pyramid of its
patch-stride map, so the backbones' token mixing is what differs. The zoo table of ``gfnet models``
(:func:`model_table`) computes params and GFLOPs the same way, from the architecture alone.

How things are measured (docs/benchmarks.md):

- GFLOPs: :mod:`gfnet_cli.models.flops` on the meta device (no weights, no arithmetic), per image.
- Latency: median wall time of a batch forward after warm-up, inside ``torch.inference_mode``
  (CUDA: synchronized around each run, never inside the forward); images/s = batch / latency.
  ``filter_form`` names the global filter's form(s) that ran (``filter_form("auto")`` measures
  its choice in the warm-up; a compiled model traces the FFT form).
- The roof: :func:`matmul_peak_gflops` times a square matrix product in the row's precision
  (once per process and device) for the machine's matmul rate; each row's achieved rate,
  ``gflop_per_s`` = 2 x GMACs per image x images/s, is reported as ``roof_pct`` of it: how
  much of the machine the model uses, and so how much is left.
- Peak memory: CUDA, the caching allocator's peak over one forward minus what was allocated
  before it. CPU, the rise of the peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs``) over one forward, in a fresh child process whose allocators give
  memory back to the system (so freed blocks from earlier runs cannot hide the peak).
- Out of memory: before running, a row's need is estimated by running it on the meta device
  and tracking live tensors; rows above the memory available (or ``memory_limit_mb``) are
  reported with ``error="out of memory"`` instead of being run. Real allocation failures are
  caught and reported the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from gfnet_cli.device import check_precision, inference, resolve_device
from gfnet_cli.engine.inference import ProgressCallback, check_at_least
from gfnet_cli.errors import GFNetError, UsageError, check_range, install_extra
from gfnet_cli.hub.resolve import resolve_config
from gfnet_cli.hub.zoo_source import zoo_source
from gfnet_cli.models.config import LIMITS, GFNetConfig, SegmentationConfig
from gfnet_cli.models.factory import build_model, model_config
from gfnet_cli.models.flops import count_flops
from gfnet_cli.models.layers import Mlp, record_filter_forms
from gfnet_cli.models.segmentation import FPN, FPNHead, SimpleFeaturePyramid
from gfnet_cli.models.zoo import ZOO

log = logging.getLogger(__name__)

BASELINES = ("vit", "resmlp")
MIXERS = ("gfnet", *BASELINES)  # global filter, self-attention, token-mixing MLP
OUT_OF_MEMORY = "out of memory"
_MB = 2**20


# --------------------------------------------------------------------------- results
@dataclass
class ProfileRow:
    """One model at one resolution: a ``profile --json`` row of docs/cli.md (plus extras)."""

    model: str
    resolution: int
    tokens: int
    batch_size: int
    device: str
    precision: str
    params: int | None
    gflops: float | None
    latency_ms: float | None = None
    images_per_second: float | None = None
    peak_memory_mb: float | None = None  # what one forward adds: activations, not the weights
    error: str | None = None
    latency_min_ms: float | None = None  # the fastest and slowest timed forward: the spread
    latency_max_ms: float | None = None
    compile_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        extra = row.pop("extra")
        for optional in ("error", "compile_s", "latency_min_ms", "latency_max_ms"):
            if row[optional] is None:
                row.pop(optional)
        row.update(extra)
        return row


# --------------------------------------------------------------------------- baselines
class _Attention(nn.Module):
    """Multi-head self-attention written out (the N x N matrix is materialized, as in DeiT)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(batch, tokens, dim))


class _ViTBlock(nn.Module):
    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, max(1, dim // 64))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return self.mlp(self.norm2(x), residual=x)


class _Affine(nn.Module):
    """ResMLP's normalization: a per-channel scale and shift."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class _ResMLPBlock(nn.Module):
    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        self.norm1 = _Affine(dim)
        self.token_mix = nn.Linear(tokens, tokens)
        self.norm2 = _Affine(dim)
        self.mlp = Mlp(dim, dim * 4)
        self.gamma1 = nn.Parameter(torch.full((dim,), 0.1))
        self.gamma2 = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.token_mix(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.gamma1 * mixed
        return x + self.gamma2 * self.mlp(self.norm2(x))


class BaselineNet(nn.Module):
    """A patch embedding, ``depth`` ViT or ResMLP blocks, pooling and a classifier.

    ``num_classes=0``: no classifier (a segmentation baseline's backbone, see
    :meth:`forward_map`).
    """

    def __init__(
        self, mixer: str, dim: int, depth: int, patch_size: int, grid: int, num_classes: int
    ) -> None:
        super().__init__()
        tokens = grid * grid
        self.mixer = mixer
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        block = {"vit": _ViTBlock, "resmlp": _ResMLPBlock}[mixer]
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim)) if mixer == "vit" else None
        self.blocks = nn.Sequential(*(block(dim, tokens) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6) if mixer == "vit" else _Affine(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return self.norm(self.blocks(x.contiguous()))

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The normed final tokens as a (B, dim, H/patch, W/patch) map."""
        rows, cols = (
            x.shape[-2] // self.patch_embed.stride[0],
            x.shape[-1] // self.patch_embed.stride[1],
        )
        return self._tokens(x).transpose(1, 2).reshape(x.shape[0], -1, rows, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._tokens(x).mean(dim=1))


class BaselineSegmenter(nn.Module):
    """A baseline's blocks under the Semantic FPN head of :class:`GFNetForSegmentation`.

    The blocks' stride-``patch`` map goes through the simple feature pyramid a flat GFNet
    uses (strides patch/4 to 2 x patch), then the same FPN neck and FPNHead.
    """

    def __init__(
        self,
        mixer: str,
        dim: int,
        depth: int,
        patch_size: int,
        grid: int,
        num_classes: int,
        settings: SegmentationConfig,
    ) -> None:
        super().__init__()
        self.backbone = BaselineNet(mixer, dim, depth, patch_size, grid, num_classes=0)
        self.pyramid = SimpleFeaturePyramid(dim)
        self.neck = FPN([dim] * 4, settings.neck_channels)
        strides = [patch_size / 4 * 2**level for level in range(4)]
        self.decode_head = FPNHead(
            settings.neck_channels,
            settings.head_channels,
            num_classes,
            strides=strides,
            dropout=settings.dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pyramid(self.backbone.forward_map(x))
        logits = self.decode_head(self.neck(features))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- what to profile
@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Enough to rebuild a profiled model anywhere (also in the memory-measuring child).

    ``mixer`` is the token mixer, one of :data:`MIXERS`: ``"gfnet"`` (the global filter of
    ``config``) or a baseline of the same width and depth, ``"vit"`` (self-attention) or
    ``"resmlp"`` (a token-mixing MLP).
    """

    name: str
    mixer: str
    config: dict[str, Any]

    def gfnet_config(self) -> GFNetConfig:
        return GFNetConfig.from_dict(self.config)

    def baseline_shape(self) -> tuple[int, int, int]:
        """(width, depth, patch size) of the baselines of this spec's GFNet."""
        config = self.gfnet_config()
        if config.kind == "flat":
            return config.widths[0], config.depths[0], config.patch_size
        # a pyramid's third stage holds most of its blocks, at 1/16 of the input size
        return config.widths[2], sum(config.depths), config.stride // 2

    def stride(self) -> int:
        if self.mixer == "gfnet":
            return self.gfnet_config().stride
        return self.baseline_shape()[2]

    def tokens(self, resolution: int) -> int:
        if self.mixer == "gfnet":
            rows, cols = self.gfnet_config().grid_sizes((resolution, resolution))[0]
            return rows * cols
        return (resolution // self.stride()) ** 2

    def build(self, resolution: int) -> nn.Module:
        """The model for ``resolution`` (a GFNet keeps its native size and resizes filters)."""
        config = self.gfnet_config()
        if self.mixer == "gfnet":
            return build_model(config)
        width, depth, patch = self.baseline_shape()
        grid = resolution // patch
        if config.is_segmentation:
            settings: SegmentationConfig = config.segmentation  # type: ignore[assignment]
            return BaselineSegmenter(
                self.mixer, width, depth, patch, grid, config.num_classes, settings
            )
        classes = config.num_classes or 1000
        return BaselineNet(self.mixer, width, depth, patch, grid, classes)

    def build_meta(self, resolution: int) -> nn.Module:
        """The model on the meta device: shapes only, for counting and size checks."""
        with torch.device("meta"):
            return self.build(resolution).eval()

    def gflops(self, resolution: int, meta_model: nn.Module | None = None) -> float:
        """GFLOPs per image at ``resolution`` (docs/flops.md), counted on the meta device."""
        model = meta_model if meta_model is not None else self.build_meta(resolution)
        inputs = torch.zeros(1, 3, resolution, resolution, device="meta")
        return count_flops(model, inputs) / 1e9

    def with_mixer(self, mixer: str) -> ModelSpec:
        """The baseline with ``mixer`` of this spec's width and depth, named after its mixer."""
        name = f"{mixer}{SEGMENTATION_SUFFIX}" if self.is_segmentation else mixer
        return ModelSpec(name=name, mixer=mixer, config=self.config)

    @property
    def is_segmentation(self) -> bool:
        return self.config.get("task") == "segmentation"


#: appended to the names of segmentation rows: what is counted is backbone + Semantic FPN
SEGMENTATION_SUFFIX = "+fpn"


def model_spec(
    model: str,
    revision: str | None = None,
    *,
    task: str | None = None,
    num_classes: int | None = None,
) -> ModelSpec:
    """The architecture of MODEL: a zoo name, a local folder or a Hub id.

    Only the config is read (:func:`gfnet_cli.hub.resolve.resolve_config`): a Hub repository's
    ``config.json``, never its weights. ``task="segmentation"`` puts a classifier's
    architecture under a Semantic FPN head (512-pixel crops); ``num_classes`` sets the classes.
    """
    config = resolve_config(model, revision)
    if task is not None or num_classes is not None:
        config = model_config(config, task=task, num_classes=num_classes)
    name = config.architecture or Path(str(model)).name or str(model)
    if config.is_segmentation:
        name += SEGMENTATION_SUFFIX
    return ModelSpec(name=name, mixer="gfnet", config=config.to_dict())


def count_params(model: nn.Module) -> int:
    """Parameters of ``model`` (on any device, the meta device included)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- measurements
class _LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensors created by the ops run under it (works on meta)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or id(tensor) in inputs:
                continue
            if tensor._base is not None:  # a view: no new memory
                continue
            nbytes = tensor.untyped_storage().nbytes()
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(tensor, self._release, nbytes)
        return out


def estimate_memory_mb(
    model: nn.Module, batch_size: int, resolution: int, dtype: torch.dtype = torch.float32
) -> float:
    """Weights plus the peak of live activations of one forward, from a run on ``meta``."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    scale = 0.5 if dtype in (torch.bfloat16, torch.float16) else 1.0
    inputs = torch.zeros(batch_size, 3, resolution, resolution, device="meta")
    tracker = _LiveBytes()
    with torch.inference_mode(), tracker:
        model(inputs)
    return (weights + tracker.peak * scale) / _MB


def available_memory_mb(device: torch.device) -> float | None:
    """Memory a row may use: free GPU memory, or the system's MemAvailable on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / _MB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "not enough memory" in text or "can't allocate" in text
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_forward(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    precision: str,
    warmup: int,
    repeats: int,
) -> tuple[float, float]:
    """(median seconds per forward, seconds of the first call) after ``warmup`` calls."""
    times, first = time_forwards(model, inputs, precision, warmup, repeats)
    return statistics.median(times), first


# A row whose slowest timed forward is this much slower than its fastest was measured on a
# busy machine (another process took the cores): its median may be off by as much.
UNSTABLE_SPREAD = 1.5


def time_forwards(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    precision: str,
    warmup: int,
    repeats: int,
) -> tuple[list[float], float]:
    """(seconds of each timed forward, seconds of the first call) after ``warmup`` calls."""
    device = inputs.device
    times: list[float] = []
    first = 0.0
    with inference(device, precision):
        for i in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            model(inputs)
            _synchronize(device)
            elapsed = time.perf_counter() - start
            if i == 0:
                first = elapsed
            if i >= warmup:
                times.append(elapsed)
    return times, first


def _cuda_peak_mb(
    model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, precision: str
) -> float:
    device = inputs.device
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with inference(device, precision):
        model(inputs)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / _MB


def _read_status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise OSError(f"{field_name} not in /proc/self/status")


def cpu_peak_rise_mb(forward: Callable[[], Any]) -> float:
    """The rise of this process's peak resident memory over one call of ``forward``.

    Linux: reset the high-water mark (``/proc/self/clear_refs``), then VmHWM - VmRSS. Elsewhere
    the rise of ``ru_maxrss``, meaningful in a fresh process only.
    """
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _read_status_kb("VmRSS")
        forward()
        return max(_read_status_kb("VmHWM") - before, 0) / 1024
    except OSError:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        forward()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(after - before, 0) * scale / _MB


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # Big blocks straight from/to the system, MKL's buffer cache off: RSS follows live memory.
    env.update(MALLOC_MMAP_THRESHOLD_="4096", MALLOC_TRIM_THRESHOLD_="0", MKL_DISABLE_FAST_MM="1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def measure_cpu_memory_in_child(
    spec: ModelSpec,
    resolution: int,
    batch_size: int,
    precision: str,
    timeout: float = 900,
    compile_model: bool = False,
) -> float:
    """Peak memory of one CPU forward, measured in a fresh Python process (MB).

    With ``compile_model`` the child compiles the model as ``profile`` does and measures the
    compiled forward (compilation itself happens in the untimed warm-up call).
    """
    request = {
        "spec": dataclasses.asdict(spec),
        "resolution": resolution,
        "batch_size": batch_size,
        "precision": precision,
        "compile": compile_model,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gfnet_cli.commands.profile", json.dumps(request)],
        capture_output=True,
        text=True,
        env=_child_environment(),
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if proc.returncode < 0 or "memory" in message.lower():  # killed (OOM killer) or OOM
            raise MemoryError(message)
        raise GFNetError(f"memory measurement failed: {message}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_memory_mb"])


def _child_main(request_json: str) -> None:
    """Entry of the memory-measuring child: build, warm up once, measure one forward."""
    request = json.loads(request_json)
    spec = ModelSpec(**request["spec"])
    resolution, precision = request["resolution"], request["precision"]
    model = spec.build(resolution).eval()
    runner = _compiled(model) if request.get("compile") else model
    inputs = torch.randn(request["batch_size"], 3, resolution, resolution)

    def forward() -> None:
        with inference(inputs.device, precision):
            runner(inputs)

    # One-time costs (compilation, filter resizes, kernel caches) are not the forward's peak.
    forward()
    peak = cpu_peak_rise_mb(forward)
    sys.stdout.write(json.dumps({"peak_memory_mb": peak}) + "\n")


_PEAKS: dict[tuple[str, str], float] = {}
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_peak_gflops(device: torch.device, precision: str, size: int | None = None) -> float:
    """The machine's matmul rate in GFLOP/s for ``precision``: the fastest of a few timed
    ``size`` x ``size`` products (2048 on CPUs, 8192 on GPUs), measured once per process."""
    key = (str(device), precision)
    if key in _PEAKS and size is None:
        return _PEAKS[key]
    size = size or (8192 if device.type == "cuda" else 2048)
    dtype = PEAK_DTYPES.get(precision, torch.float32)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        for i in range(6):  # the first run warms up (kernels, caches, clocks)
            _synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            _synchronize(device)
            if i:
                best = min(best, time.perf_counter() - start)
    peak = 2 * size**3 / best / 1e9
    _PEAKS[key] = peak
    return peak


def _add_roof(row: ProfileRow, device: torch.device, precision: str) -> None:
    """The row's achieved GFLOP/s (2 x MACs) and its share of the matmul peak."""
    if row.images_per_second is None or not row.gflops:
        return
    achieved = 2 * row.gflops * row.images_per_second
    peak = matmul_peak_gflops(device, precision)
    row.extra["gflop_per_s"] = round(achieved, 1)
    row.extra["matmul_peak_gflop_per_s"] = round(peak, 1)
    row.extra["roof_pct"] = round(100 * achieved / peak, 1)


# --------------------------------------------------------------------------- profiling
@dataclass
class ProfileOptions:
    batch_size: int = 1
    device: str = "auto"
    precision: str = "fp32"
    warmup: int = 2
    repeats: int = 10
    compile: bool = False
    measure_memory: bool = True
    memory_limit_mb: float | None = None
    roof: bool = True  # time a matmul for the machine's peak; rows get their share of it

    def check(self) -> None:
        """Refuse counts and limits out of range (before any model is built)."""
        check_at_least("batch_size", self.batch_size, 1)
        check_at_least("warmup", self.warmup, 0)
        check_at_least("repeats", self.repeats, 1)
        check_range("memory_limit_mb", self.memory_limit_mb, 0, above=True)


def _check_resolution(spec: ModelSpec, resolution: int) -> None:
    stride = spec.stride()
    if resolution <= 0 or resolution % stride:
        raise UsageError(
            f"resolution {resolution} does not suit {spec.name}: it must be a positive "
            f"multiple of {stride}"
        )


def _compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` with inductor's freezing (weights become constants) for inference."""
    try:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    except ImportError:  # pragma: no cover - inductor ships with torch
        pass
    return torch.compile(model)


def profile_row(
    spec: ModelSpec, resolution: int, options: ProfileOptions, device: torch.device
) -> ProfileRow:
    """Profile one model at one square resolution; an out-of-memory run becomes an error row."""
    _check_resolution(spec, resolution)
    meta_model = spec.build_meta(resolution)
    params = count_params(meta_model)
    gflops = spec.gflops(resolution, meta_model)
    row = ProfileRow(
        model=spec.name,
        resolution=resolution,
        tokens=spec.tokens(resolution),
        batch_size=options.batch_size,
        device=str(device),
        precision=options.precision,
        params=params,
        gflops=round(gflops, 4),
    )
    dtype = torch.float32 if options.precision == "fp32" else torch.bfloat16
    need = estimate_memory_mb(meta_model, options.batch_size, resolution, dtype)
    limit = options.memory_limit_mb
    if limit is None:
        available = available_memory_mb(device)
        limit = None if available is None else 0.9 * available
    row.extra["estimated_memory_mb"] = round(need, 1)
    if limit is not None and need > limit:
        log.warning(
            "%s at %d px needs about %.0f MB, more than the %.0f MB available: not run",
            spec.name,
            resolution,
            need,
            limit,
        )
        row.error = OUT_OF_MEMORY
        return row
    try:
        _measure(row, spec, resolution, options, device)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        log.warning("%s at %d px ran out of memory: %s", spec.name, resolution, exc)
        row.latency_ms = row.images_per_second = row.peak_memory_mb = None
        row.error = OUT_OF_MEMORY
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _measure(
    row: ProfileRow,
    spec: ModelSpec,
    resolution: int,
    options: ProfileOptions,
    device: torch.device,
) -> None:
    log.info("profiling %s at %d px on %s", spec.name, resolution, device)
    model = spec.build(resolution).to(device).eval()
    inputs = torch.randn(options.batch_size, 3, resolution, resolution, device=device)
    runner: Callable[[torch.Tensor], torch.Tensor] = model
    if options.compile:
        runner = _compiled(model)
    with record_filter_forms() as forms:
        times, first_s = time_forwards(
            runner, inputs, options.precision, max(options.warmup, 1), max(options.repeats, 1)
        )
    if spec.mixer == "gfnet":
        # nothing recorded: a compiled graph, which traces the FFT form (layers._auto_form)
        row.extra["filter_form"] = "+".join(sorted(forms)) if forms else "fft"
    median_s = statistics.median(times)
    row.latency_min_ms, row.latency_max_ms = round(min(times) * 1e3, 3), round(max(times) * 1e3, 3)
    if len(times) > 1 and max(times) > UNSTABLE_SPREAD * min(times):
        log.warning("%s at %d px: forwards took %.1f to %.1f ms (median %.1f): the machine is "
                    "busy, so latencies are unreliable; rerun on an idle one or with more "
                    "repeats", spec.name, resolution, min(times) * 1e3, max(times) * 1e3,
                    median_s * 1e3)  # fmt: skip
    if options.compile:
        row.compile_s = round(max(first_s - median_s, 0.0), 2)
    row.latency_ms = round(median_s * 1e3, 3)
    row.images_per_second = round(options.batch_size / median_s, 2)
    if options.roof:
        _add_roof(row, device, options.precision)
    if not options.measure_memory:
        return
    # The runner that was timed is the one measured: a compiled graph's buffers are not eager's.
    if device.type == "cuda":
        row.peak_memory_mb = round(_cuda_peak_mb(runner, inputs, options.precision), 2)
    elif device.type == "cpu":
        del model, runner, inputs  # the child measures; free this process's copy first
        peak = measure_cpu_memory_in_child(
            spec, resolution, options.batch_size, options.precision, compile_model=options.compile
        )
        row.peak_memory_mb = round(peak, 2)


def profile(
    model: str = "gfnet-xs",
    resolutions: Sequence[int] = (),
    compare: Sequence[str] = (),
    options: ProfileOptions | None = None,
    revision: str | None = None,
    progress: ProgressCallback | None = None,
    *,
    task: str | None = None,
    num_classes: int | None = None,
    plot: str | Path | None = None,
) -> list[ProfileRow]:
    """Profile MODEL (and the ``compare`` baselines) at each resolution, one row each.

    ``progress(rows_done, rows_total)`` is called after each row; without it, profiling is
    silent apart from logging. ``task="segmentation"`` profiles backbone + Semantic FPN head
    (``num_classes`` classes; the baselines carry the same head). ``plot``: also draw the rows
    there (:func:`plot_rows`; a ``.png``, needs matplotlib), checked before anything is
    measured. A resolution beyond :data:`~gfnet_cli.models.config.LIMITS` is refused; one the
    device cannot hold gives an out-of-memory row.
    """
    options = options or ProfileOptions()
    options.check()
    check_range("num_classes", num_classes, 1, LIMITS["num_classes"][1])
    for size in resolutions:
        check_range("resolution", size, 1, LIMITS["img_size"][1])
    if plot is not None:
        check_plot_path(plot)
    unknown = [name for name in compare if name not in BASELINES]
    if unknown:
        raise UsageError(
            f"unknown baseline {unknown[0]!r} in compare: expected {', '.join(BASELINES)}",
            param="compare",
        )
    device = resolve_device(options.device)
    options = dataclasses.replace(options, precision=check_precision(device, options.precision))
    spec = model_spec(model, revision=revision, task=task, num_classes=num_classes)
    sizes = list(resolutions) or [spec.gfnet_config().image_size[0]]
    specs = [spec] + [spec.with_mixer(name) for name in dict.fromkeys(compare)]
    for each in specs:  # refuse bad input before spending minutes on the first rows
        for size in sizes:
            _check_resolution(each, size)
    rows: list[ProfileRow] = []
    for each in specs:
        for size in sizes:
            rows.append(profile_row(each, size, options, device))
            if progress is not None:
                progress(len(rows), len(specs) * len(sizes))
    if plot is not None:
        plot_rows(rows, plot)
    return rows


# --------------------------------------------------------------------------- the zoo table
@dataclass
class ZooRow:
    """A row of ``gfnet models``: params and GFLOPs computed, accuracy as published."""

    name: str
    kind: str  # the architecture's layout: flat or pyramid (GFNetConfig.kind)
    params: int
    gflops: float
    img_size: int
    top1: float
    top5: float
    #: where the weights come from now (gfnet_cli.hub.zoo_source.ZooSource.to_dict())
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_table() -> list[ZooRow]:
    """One row per zoo variant; params and GFLOPs counted on the architecture (no weights)."""
    rows = []
    for entry in ZOO.values():
        spec = model_spec(entry.name)
        meta_model = spec.build_meta(entry.img_size)
        rows.append(
            ZooRow(
                name=entry.name,
                kind=entry.kind,
                params=count_params(meta_model),
                gflops=round(spec.gflops(entry.img_size, meta_model), 3),
                img_size=entry.img_size,
                top1=entry.top1,
                top5=entry.top5,
                source=zoo_source(entry.name).to_dict(),
            )
        )
    return rows


# --------------------------------------------------------------------------- the figure
def check_plot_path(path: str | Path) -> Path:
    """Refuse a plot that could not be written: not a ``.png``, or no matplotlib."""
    if not str(path).lower().endswith(".png"):
        raise UsageError(
            f"plot writes a PNG file: {str(path)!r} does not end in .png", param="plot"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            f"plotting needs matplotlib: {install_extra('plot')} (or pip install matplotlib)",
            param="plot",
        ) from None
    return Path(path)


def plot_rows(rows: Sequence[ProfileRow], path: str | Path) -> Path:
    """FLOPs, latency and peak memory against tokens per model, log scales (paper Fig. 2)."""
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = (
        ("gflops", "GFLOPs per image"),
        ("latency_ms", "latency per batch (ms)"),
        ("peak_memory_mb", "peak memory (MB)"),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    models = list(dict.fromkeys(row.model for row in rows))
    for axis, (key, label) in zip(axes[0], panels, strict=True):
        for name in models:
            points = sorted(
                (row.tokens, getattr(row, key))
                for row in rows
                if row.model == name and getattr(row, key) is not None and getattr(row, key) > 0
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=name)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("tokens")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    first = rows[0] if rows else None
    if first is not None:
        figure.suptitle(f"batch {first.batch_size}, {first.device}, {first.precision}", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot write {path}: folder {path.parent} does not exist")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


if __name__ == "__main__":  # the memory-measuring child
    _child_main(sys.argv[1])
