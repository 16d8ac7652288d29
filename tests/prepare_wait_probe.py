"""Run under ``torchrun --nproc_per_node 2`` (tests/test_finetune_faults.py): rank 0 "prepares
the data" for SLEEP seconds inside ``main_process_first`` while rank 1 waits.

The default group is created with a DEFAULT_S-second timeout, the wait gets PREPARE_MIN
minutes: the wait outlasting the default group's timeout shows it is on a group of its own.
Each process writes OUT/rank-N.json; a rank whose wait timed out exits 3.

    torchrun --standalone --nproc_per_node 2 tests/prepare_wait_probe.py SLEEP PREPARE_MIN \
        DEFAULT_S OUT
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from gfnet_cli.engine import distributed
from gfnet_cli.errors import GFNetError


def main() -> None:
    sleep, prepare_min, default_s = map(float, sys.argv[1:4])
    out = Path(sys.argv[4])
    dist.init_process_group("gloo", timeout=timedelta(seconds=default_s))
    rank = dist.get_rank()
    started = time.monotonic()
    try:
        with distributed.main_process_first(timedelta(minutes=prepare_min)):
            if rank == 0:
                time.sleep(sleep)
        distributed.barrier()
    except GFNetError as exc:
        report = {"rank": rank, "error": str(exc), "param": exc.param}
        (out / f"rank-{rank}.json").write_text(json.dumps(report))
        sys.exit(3)
    waited = round(time.monotonic() - started, 1)
    (out / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "ok": True, "waited": waited}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
