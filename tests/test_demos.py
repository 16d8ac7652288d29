"""The segmentation demo, end to end as a user runs it: it must reach its mIoU bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_segmentation_demo_reaches_its_miou_bar(tmp_path):
    """scripts/demo_segmentation.sh (``make demo-seg``): real digit strokes, trained from
    scratch, scored once on held-out test scenes; the script itself exits 1 below its bar."""
    env = os.environ | {
        "OUT": str(tmp_path),
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(["bash", str(ROOT / "scripts/demo_segmentation.sh")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    scored = json.loads((tmp_path / "scenes-eval.json").read_text())
    assert scored["mean_iou"] >= 0.40 and scored["num_samples"] > 0
    for stem in ("00000", "00001", "00002", "00003"):
        assert Image.open(tmp_path / "scene-masks" / f"{stem}.png").mode == "P"
    assert Image.open(tmp_path / "segmentation-demo.png").size[0] > 0
