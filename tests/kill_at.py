"""`ganforge train ...` that sends itself SIGKILL at a chosen moment, counted in events, not
timed, so the kill lands at that moment whatever the machine's speed. Run by test_crash.py:

    python tests/kill_at.py WHERE N train-arguments...

WHERE (N counts from 1 within this process):
  checkpoints-partial     the Nth checkpoint write: half the bytes in the temp file, then killed
  checkpoints-unrenamed   the Nth checkpoint written and synced, killed before its rename
  checkpoints-renamed     the Nth checkpoint renamed into place, killed before the directory sync
  samples-partial, plots-partial   the same for the Nth sample grid / plot file
  log                     the Nth metrics.jsonl line: half of it written (a torn line), killed
  step                    killed as the Nth generator step begins
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    where, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    from ganforge import io, train

    seen = [0]

    def hit() -> bool:
        seen[0] += 1
        return seen[0] == nth

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "step":
        g_step = train.Trainer.g_step

        def killing_g_step(self) -> None:
            if hit():
                die()
            g_step(self)

        train.Trainer.g_step = killing_g_step
    elif where == "log":
        append = io.append_jsonl

        def torn_append(path, record) -> None:
            if hit():
                line = (json.dumps(record, sort_keys=True) + "\n").encode()
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, line[:len(line) // 2])
                die()
            append(path, record)

        io.append_jsonl = torn_append
    else:
        folder, phase = where.split("-")
        write, replace = io.write_bytes, os.replace

        def killing_write(path, data: bytes) -> None:
            if Path(path).parent.name == folder and hit():
                if phase == "partial":
                    with io.atomic_open(path) as f:
                        f.write(data[:len(data) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                        die()

                def killing_replace(src, dst) -> None:
                    if phase == "renamed":
                        replace(src, dst)
                    die()

                os.replace = killing_replace  # atomic_open's rename of this very file
            write(path, data)

        io.write_bytes = killing_write
    from ganforge.cli import main as cli

    return cli(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
