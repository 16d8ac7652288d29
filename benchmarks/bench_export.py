"""Exported GFNets: onnxruntime speed beside the eager paths, the matmul form's FLOPs, and the
seven variants' exports checked against PyTorch.

Not part of the test run. Three parts (each can be run alone):

- ``--speed`` (default): GFNet-XS (``--model``) with random weights exported in both filter
  forms (native DFT ops, DFT as matrix products); onnxruntime on the CPU, images/s at each
  ``--batch-size``, beside our eager fp32 (fused oneDNN path) and bf16 paths, timed
  interleaved in one process (warm-up, then alternating repeats), medians.
  onnxruntime's threads do not spin between runs here (they would steal the cores from the
  eager runs that follow); ``--sweep`` also times session options (threads, graph
  optimization level, spinning) for the matmul form, and ``--profile`` prints onnxruntime's
  time per operator type. ``--int8`` adds the int8 file (``export --quantize int8`` of the
  matmul form: its check and its size against fp32); ``--no-native`` skips the native form.
- ``--flops``: GMACs per image of the FFT and matmul forms at 224 and 448 px (the project's
  convention, docs/flops.md), the global filter's share, and the DFT matrices' size.
- ``--dft``: onnxruntime's ``DFT`` operator alone, per transform, for grid lengths 14, 16,
  28, 32 (what makes the native form slow on the CPU).
- ``--verify``: every zoo architecture (random weights), exported in both forms at 224 and
  at 224x320, run in onnxruntime at batch 1 and 5: the largest logit difference from
  PyTorch (must be below 1e-4) and top-1 agreement; ``onnx.checker`` with full checks.

    PYTHONPATH=. python benchmarks/bench_export.py --speed --flops
    PYTHONPATH=. python benchmarks/bench_export.py --speed --int8 --no-native
    PYTHONPATH=. python benchmarks/bench_export.py --verify          # ~10+ minutes on 2 cores
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from gfnet_cli import create_model, export_model, list_models
from gfnet_cli.device import autocast_context
from gfnet_cli.models.flops import count_flops
from gfnet_cli.models.layers import filter_form


def _session(path: Path, threads: int, level: str = "all", spin: bool = False, profile=False):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_both(
    model, folder: Path, size=None, forms=("native", "matmul")
) -> dict[str, tuple[Path, float, float]]:
    """Both forms exported: {form: (path, export seconds, checked max |diff|)}."""
    files = {}
    for form in forms:
        path = folder / f"{form}.onnx"
        start = time.perf_counter()
        result = export_model(model, path, fft=form, img_size=size, overwrite=True)
        files[form] = (path, time.perf_counter() - start, result.max_abs_diff)
    return files


# ---------------------------------------------------------------------------- speed
def _time_interleaved(runs: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label in runs}
    for i in range(warmup + repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            if i >= warmup:
                times[label].append(time.perf_counter() - start)
    return times


def _eager(model, images, precision):
    def run():
        with torch.inference_mode(), autocast_context("cpu", precision):
            model(images)

    return run


def _ort(session, images):
    feed = {"pixel_values": images.numpy()}
    return lambda: session.run(None, feed)


def speed(args: argparse.Namespace, folder: Path) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    forms = ("matmul",) if args.no_native else ("native", "matmul")
    files = _export_both(model, folder, forms=forms)
    for form, (_, seconds, diff) in files.items():
        print(f"export {form}: {seconds:.1f} s, checked max |logit diff| {diff:.2e}")
    if args.int8:
        path, start = folder / "int8.onnx", time.perf_counter()
        result = export_model(model, path, fft="matmul", quantize="int8", overwrite=True)
        q = result.quantization
        print(
            f"export int8 (matmul): {time.perf_counter() - start:.1f} s; check: top-1 = fp32 on "
            f"{q['top1_agreement']:.1%} of {q['check_images']} images, max |logit error| "
            f"{q['max_logit_error']:.2e}; {q['fp32_bytes'] / 1e6:.1f} MB fp32 -> "
            f"{path.stat().st_size / 1e6:.1f} MB int8 "
            f"({files['matmul'][0].stat().st_size / path.stat().st_size:.2f}x smaller)"
        )
        files["int8"] = (path, 0.0, q["max_logit_error"])
    sessions = {form: _session(path, threads) for form, (path, _, _) in files.items()}
    for batch in args.batch_size:
        images = torch.randn(batch, 3, 224, 224)
        runs = {
            "eager fp32 (fused)": _eager(model, images, "fp32"),
            "eager bf16 (fused)": _eager(model, images, "bf16"),
        }
        runs |= {f"onnxruntime {form}": _ort(session, images) for form, session in sessions.items()}
        with torch.inference_mode():
            expected = model(images)
        for form, session in sessions.items():
            got = session.run(None, {"pixel_values": images.numpy()})[0]
            print(
                f"batch {batch}: {form} max |logit diff| {np.abs(got - expected.numpy()).max():.2e}"
            )
        repeats = args.repeats if batch > 1 else args.repeats * 4
        times = _time_interleaved(runs, args.warmup, repeats)
        _table(f"{args.model} @224, batch {batch}, {threads} threads", times, batch)
    if args.sweep:
        _sweep(args, files["matmul"][0], threads)
    if args.profile:
        for form, (path, _, _) in files.items():
            _profile(path, form, threads, max(args.batch_size))


def _table(title: str, times: dict[str, list[float]], batch: int) -> None:
    medians = {label: statistics.median(values) for label, values in times.items()}
    base = medians.get("eager fp32 (fused)") or next(iter(medians.values()))
    print(f"\n{title} (load average {os.getloadavg()[0]:.2f})")
    print(f"{'run':<34}{'median ms':>10}{'images/s':>10}{'vs fp32 eager':>15}  runs (ms)")
    for label, median in medians.items():
        runs = " ".join(f"{v * 1e3:.0f}" for v in times[label])
        speed = f"{median * 1e3:>10.1f}{batch / median:>10.1f}{base / median:>14.2f}x"
        print(f"{label:<34}{speed}  {runs}")


def _sweep(args: argparse.Namespace, path: Path, threads: int) -> None:
    batch = max(args.batch_size)
    images = torch.randn(batch, 3, 224, 224)
    runs = {}
    for level in ("basic", "extended", "all"):
        runs[f"matmul, opt {level}, {threads} threads"] = _ort(
            _session(path, threads, level), images
        )
    runs[f"matmul, opt all, {threads} threads, spinning"] = _ort(
        _session(path, threads, "all", spin=True), images
    )
    if threads > 1:
        runs["matmul, opt all, 1 thread"] = _ort(_session(path, 1), images)
    times = _time_interleaved(runs, args.warmup, args.repeats)
    _table(f"onnxruntime session options, batch {batch}", times, batch)


def _profile(path: Path, form: str, threads: int, batch: int) -> None:
    session = _session(path, threads, profile=True)
    feed = {
        "pixel_values": np.random.default_rng(0).standard_normal((batch, 3, 224, 224), np.float32)
    }
    for _ in range(3):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    per_op: collections.Counter = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    total = sum(per_op.values())
    print(f"\nonnxruntime time per operator, {form} form, batch {batch}:")
    for op, micros in per_op.most_common(6):
        print(f"  {op:<22}{100 * micros / total:>6.1f}%  {micros / 3e3:>8.1f} ms per run")


# ---------------------------------------------------------------------------- FLOPs
def flops(args: argparse.Namespace) -> None:
    config = create_model(args.model).config
    print(f"\n{args.model}: GMACs per image (docs/flops.md convention)")
    print(
        f"{'size':>6}{'FFT form':>10}{'matmul form':>13}{'filter FFT':>12}{'filter matmul':>15}"
        f"{'DFT tables':>12}"
    )
    for size in (224, 448):
        with torch.device("meta"):
            model = create_model(config.replace(img_size=size)).eval()
        images = torch.zeros(1, 3, size, size, device="meta")
        fft_total = count_flops(model, images) / 1e9
        with filter_form("matmul"):
            matmul_total = count_flops(model, images) / 1e9
        grids = model.config.grid_sizes()
        filter_fft = filter_matmul = 0.0
        tables = 0
        for grid, width, depth in zip(grids, config.widths, config.depths, strict=True):
            rows, cols = grid
            half = cols // 2 + 1
            points = rows * cols
            filter_fft += depth * width * (2 * points * math.log2(points) + points) / 1e9
            filter_matmul += depth * width * (4 * rows**2 * cols + 8 * rows * cols * half) / 1e9
            tables += 4 * (
                2 * rows * rows + 2 * half * 2 * cols + 2 * cols * 2 * half + 2 * rows * rows
            )
        print(
            f"{size:>6}{fft_total:>10.3f}{matmul_total:>13.3f}{filter_fft:>12.3f}"
            f"{filter_matmul:>15.3f}{tables / 1024:>10.1f}KB"
        )


# ---------------------------------------------------------------------------- the DFT kernel
def dft_kernel(args: argparse.Namespace) -> None:
    """A one-node graph: ``DFT`` over axis 1 of (32·n, n, 384, 1) real signals (a batch-32
    grid's worth of 1-D transforms), time per transform."""
    from onnx import TensorProto, helper

    print("\nonnxruntime DFT operator, full complex output, per 1-D transform:")
    for length in (14, 16, 28, 32):
        signal = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, length, 384, 1])
        result = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        axis = helper.make_tensor("axis", TensorProto.INT64, [], [1])
        node = helper.make_node("DFT", ["x", "", "axis"], ["y"], onesided=0)
        graph = helper.make_graph([node], "dft", [signal], [result], initializer=[axis])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        feed = {
            "x": np.random.default_rng(0).standard_normal((32 * length, length, 384, 1), np.float32)
        }
        session.run(None, feed)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
        per = statistics.median(times) / (32 * length * 384)
        print(f"  length {length:>3}: {per * 1e6:.2f} us")


# ---------------------------------------------------------------------------- verification
def verify(args: argparse.Namespace, folder: Path) -> None:
    print("\nzoo architectures, random weights: onnxruntime vs PyTorch (batch 1 and 5)")
    print(
        f"{'model':<12}{'size':>9}{'form':>8}{'export s':>10}{'max |diff|':>12}{'top-1':>7}"
        f"{'max |logit|':>12}"
    )
    worst = 0.0
    start_all = time.perf_counter()
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name).eval()
        for size in ((224, 224), (224, 320)):
            files = _export_both(model, folder, size)
            for form, (path, seconds, _) in files.items():
                onnx.checker.check_model(str(path), full_check=True)
                session = _session(path, torch.get_num_threads())
                diff, same, top = 0.0, True, 0.0
                for batch in (1, 5):
                    images = torch.randn(batch, 3, *size)
                    with torch.inference_mode():
                        expected = model(images).numpy()
                    got = session.run(None, {"pixel_values": images.numpy()})[0]
                    diff = max(diff, float(np.abs(got - expected).max()))
                    same &= bool((got.argmax(1) == expected.argmax(1)).all())
                    top = max(top, float(np.abs(expected).max()))
                worst = max(worst, diff)
                print(
                    f"{name:<12}{'x'.join(map(str, size)):>9}{form:>8}{seconds:>10.1f}"
                    f"{diff:>12.2e}{'same' if same else 'DIFF':>7}{top:>12.3f}",
                    flush=True,
                )
                if diff >= 1e-4 or not same:
                    raise SystemExit(f"{name} {size} {form}: diff {diff:.2e}, top-1 same: {same}")
                path.unlink()
    minutes = (time.perf_counter() - start_all) / 60
    print(f"all within 1e-4 (worst {worst:.2e}), top-1 identical; {minutes:.1f} minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gfnet-xs")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="with --speed: session options")
    parser.add_argument("--profile", action="store_true", help="with --speed: time per operator")
    parser.add_argument("--int8", action="store_true", help="with --speed: the int8 file too")
    parser.add_argument("--no-native", action="store_true", help="with --speed: matmul form only")
    parser.add_argument("--flops", action="store_true")
    parser.add_argument("--dft", action="store_true")
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.speed or args.flops or args.verify or args.dft):
        args.speed = True
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_export.") as tmp:
        if args.flops:
            flops(args)
        if args.speed:
            speed(args, Path(tmp))
        if args.dft:
            dft_kernel(args)
        if args.verify:
            verify(args, Path(tmp))


if __name__ == "__main__":
    main()
