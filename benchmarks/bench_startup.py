"""Start-up time of the ``gfnet`` command beside ``python -c "import torch"``.

Every run is a fresh process, so each pays the imports a user pays. In one session, and
interleaved so that load from other work on the machine hits all three alike:

* ``gfnet --help``: must import neither torch, datasets nor huggingface_hub;
* ``gfnet predict IMAGE --model FOLDER``: one small image, a tiny local MODEL folder made
  here with :func:`gfnet_cli.create_model` (no network, no cache);
* ``python -c "import torch"``: the floor any command that runs a model pays.

Goals (docs/benchmarks.md): ``--help`` at most 0.35x the torch import, ``predict`` at most
1.6x. Medians of ``--repeats`` runs after ``--warmup`` untimed rounds.

    python benchmarks/bench_startup.py --repeats 7 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP_GOAL = 0.35
PREDICT_GOAL = 1.6


def gfnet_command() -> list[str]:
    """The installed ``gfnet`` script beside this interpreter, else ``python -m gfnet_cli``."""
    script = Path(sys.executable).with_name("gfnet")
    if script.exists():
        return [str(script)]
    found = shutil.which("gfnet")
    return [found] if found else [sys.executable, "-m", "gfnet_cli"]


def make_inputs(root: Path) -> tuple[Path, Path]:
    """A tiny MODEL folder (3 classes, 32 px) and one 40x30 JPEG to classify."""
    from PIL import Image

    from gfnet_cli import GFNetConfig, create_model, save_model

    config = GFNetConfig(
        patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3,
        class_names=["cat", "dog", "bird"],
    )  # fmt: skip
    folder = save_model(create_model(config).eval(), root / "tiny-model")
    image = root / "one.jpg"
    Image.new("RGB", (40, 30), (200, 120, 40)).save(image)
    return folder, image


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall time of one run of ``command``; a failing run stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="Timed rounds (median reported).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed rounds first.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder, image = make_inputs(Path(tmp))
        # Offline and with an empty cache: what is measured is start-up, never the network.
        env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(Path(tmp) / "hf")}
        gfnet = gfnet_command()
        commands = {
            "gfnet --help": [*gfnet, "--help"],
            "gfnet predict": [*gfnet, "predict", str(image), "--model", str(folder)],
            "import torch": [sys.executable, "-c", "import torch"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.warmup + args.repeats):
            for name, command in commands.items():  # interleaved: same load for all three
                elapsed = timed(command, env)
                if round_ >= args.warmup:
                    times[name].append(elapsed)

    medians = {name: statistics.median(values) for name, values in times.items()}
    torch_s = medians["import torch"]
    result = {
        "median_s": {name: round(value, 3) for name, value in medians.items()},
        "runs_s": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "help_vs_torch": round(medians["gfnet --help"] / torch_s, 3),
        "predict_vs_torch": round(medians["gfnet predict"] / torch_s, 3),
        "goals": {"help_vs_torch": HELP_GOAL, "predict_vs_torch": PREDICT_GOAL},
        "repeats": args.repeats,
        "warmup": args.warmup,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, value in medians.items():
        print(f"{name:14} {value:6.3f} s  (runs: {', '.join(f'{v:.2f}' for v in times[name])})")
    print(f"--help  / import torch: {result['help_vs_torch']:.2f}x (goal <= {HELP_GOAL}x)")
    print(f"predict / import torch: {result['predict_vs_torch']:.2f}x (goal <= {PREDICT_GOAL}x)")


if __name__ == "__main__":
    main()
