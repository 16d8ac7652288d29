"""The global filter's two forms side by side: ``torch.fft`` against DFT matrix products.

Not part of the test run. For each token grid (7x7 ... 64x64, with the channel count the zoo
variants have there), batch size and precision, times one :class:`GlobalFilter` in the FFT
form and in the matmul form, interleaved (warm-up, then alternating repeats: load changes hit
both alike), and prints medians, the ratio and what ``filter_form("auto")`` picks when it
measures the same case itself. ``--backward`` times forward + backward (training);
``--device cuda`` times on a GPU (synchronized around each run; scripts/gpu_check.sh).

    PYTHONPATH=. python benchmarks/bench_filter_forms.py [--repeats 5] [--backward] [--json]
        [--grid 14:384 --grid 56:128] [--batch-size 1 --batch-size 32] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gfnet_cli.device import autocast_context
from gfnet_cli.models import layers
from gfnet_cli.models.layers import GlobalFilter, filter_form

# (grid side, channels): flat variants at 224/384/448/512 (grids 14, 24, 28, 32) and the
# pyramid stages (56/28/14/7 at 224, up to 64 at 512)
GRIDS = ((7, 512), (14, 384), (24, 384), (28, 256), (32, 384), (48, 192), (56, 128), (64, 128))


def _run(gfilter: GlobalFilter, x: torch.Tensor, backward: bool) -> None:
    if backward:
        out = gfilter(x)
        torch.autograd.grad(out, [x, gfilter.complex_weight], torch.ones_like(out))
    else:
        with torch.inference_mode():
            gfilter(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def measure(grid: int, channels: int, batch: int, precision: str, args) -> dict:
    torch.manual_seed(0)
    device = torch.device(args.device)
    gfilter = GlobalFilter(channels, (grid, grid)).to(device).train(args.backward)
    x = torch.randn(batch, grid, grid, channels, device=device, requires_grad=args.backward)
    times: dict[str, list[float]] = {"fft": [], "matmul": []}
    with autocast_context(device, precision):
        for i in range(args.warmup + args.repeats):
            for form, values in times.items():
                with filter_form(form):
                    start = time.perf_counter()
                    _run(gfilter, x, args.backward)
                    elapsed = time.perf_counter() - start
                if i >= args.warmup:
                    values.append(elapsed)
        layers.clear_filter_form_choices()
        with layers.record_filter_forms() as chosen:
            _run(gfilter, x, args.backward)
    fft, matmul = (statistics.median(times[form]) * 1e3 for form in ("fft", "matmul"))
    return {
        "grid": grid,
        "channels": channels,
        "batch_size": batch,
        "precision": precision,
        "device": str(device),
        "backward": args.backward,
        "fft_ms": round(fft, 3),
        "matmul_ms": round(matmul, 3),
        "fft_over_matmul": round(fft / matmul, 3),
        "auto": "+".join(sorted(chosen)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="append", help="SIDE:CHANNELS (repeatable)")
    parser.add_argument("--batch-size", type=int, action="append")
    parser.add_argument("--precision", action="append", choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="one JSON list on stdout")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    grids = [tuple(int(v) for v in g.split(":")) for g in args.grid] if args.grid else GRIDS
    rows = []
    if not args.json:
        mode = "forward+backward" if args.backward else "forward"
        print(f"{mode} on {args.device}, threads {torch.get_num_threads()}, medians of "
              f"{args.repeats}")  # fmt: skip
        print(f"{'grid':>6}{'C':>6}{'batch':>6}{'prec':>6}{'fft ms':>10}{'matmul ms':>11}"
              f"{'fft/mm':>8}  auto")  # fmt: skip
    for grid, channels in grids:
        for batch in args.batch_size or (1, 32):
            for precision in args.precision or ("fp32", "bf16"):
                row = measure(grid, channels, batch, precision, args)
                rows.append(row)
                if not args.json:
                    print(
                        f"{grid:>6}{channels:>6}{batch:>6}{precision:>6}{row['fft_ms']:>10.2f}"
                        f"{row['matmul_ms']:>11.2f}{row['fft_over_matmul']:>8.2f}  {row['auto']}",
                        flush=True,
                    )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
