"""tests/gpu: checks that need a CUDA GPU (``pytest -m gpu tests/gpu``, scripts/gpu_check.sh).

Every test here carries the ``gpu`` marker and is skipped where CUDA is not available, so the
CPU suite collects them and moves on. They run on a lent GPU machine, never in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)
