"""Run under `torchrun --nproc_per_node 2` by tests/test_distributed.py: trains through the CLI
(`ganforge train ARGS`) and writes the names of this process's OS threads, taken just after the
process group was made and again after the CLI returned, to OUT/threads_rank<r>.json.

    torchrun --standalone --nproc_per_node 2 tests/teardown_worker.py OUT train --data ...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ganforge import distributed as dist_
from ganforge.cli import main


def thread_names() -> list[str]:
    tasks = Path("/proc/self/task")
    return sorted((t / "comm").read_text().strip() for t in tasks.iterdir())


if __name__ == "__main__":
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    seen: dict[str, list[str]] = {}
    init = dist_.init

    def init_and_look(device_name: str):
        result = init(device_name)
        seen["with_group"] = thread_names()
        return result

    dist_.init = init_and_look
    rc = main(argv)
    seen["after"] = thread_names()
    (out / f"threads_rank{os.environ['RANK']}.json").write_text(json.dumps(seen))
    sys.exit(rc)
