"""``gfnet`` with PyTorch's deterministic algorithms on (tests/gpu: bit-exact resume on CUDA).

    python tests/gpu/deterministic_cli.py finetune --device cuda ...

cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts for its deterministic mode,
cuDNN its own switch; both are set here, then the ordinary CLI runs. ``warn_only``: an op
PyTorch lists as having no deterministic CUDA kernel (``nll_loss`` is listed) warns instead of
stopping the run; the test then compares the weights, which is what matters.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

torch.use_deterministic_algorithms(True, warn_only=True)
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False

from gfnet_cli.cli.main import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
