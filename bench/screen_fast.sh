#!/bin/bash
# One row of the `fast` preset's tuning rounds (docs/BENCHMARKS.md, "Tuning the `fast` preset",
# rounds 2-7): the preset with the given changes trains on Fashion-MNIST for MINUTES of wall
# clock on one torch thread (no evaluation during training), then 2,000 samples of its last
# checkpoint are scored against the 10,000 test images. A round is two rows side by side on a
# 2-core machine, one of them the unchanged preset (step rates drift between sessions):
#
#   bash bench/screen_fast.sh /tmp/scr base 8 &
#   bash bench/screen_fast.sh /tmp/scr lsgan 8 --set loss=lsgan &
#   wait; cat /tmp/scr/results.tsv
#
# Each row appends "name, changes, G steps, fid2k_test, kid2k_test" (tab-separated) to
# WORK_DIR/results.tsv. A row's run is WORK_DIR/NAME (an existing one is an error).
# PY=... picks the interpreter (default .venv/bin/python); run it from a patched checkout
# (bench/patches) to screen an option that is not in the code.
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 WORK_DIR NAME MINUTES [--set KEY=VALUE ...]" >&2; exit 2; }
WORK=$1 NAME=$2 MINUTES=$3
shift 3
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RUN=$WORK/$NAME
[[ -e $RUN ]] && { echo "$RUN exists: pick another NAME or remove it" >&2; exit 2; }
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
"$PY" -m ganforge train --data fashion-mnist --preset fast --minutes "$MINUTES" \
    --steps 1000000 --set threads=1 --set eval_every=0 --set eval_n=0 "$@" --out "$RUN" \
    --no-progress > "$RUN.train.log" 2>&1 || { tail -20 "$RUN.train.log" >&2; exit 1; }
"$PY" -m ganforge evaluate "$RUN" --latest --ref fashion-mnist:test --n 2000 \
    --metrics fid,kid --json --no-progress > "$RUN.json" 2> "$RUN.eval.log" \
    || { tail -20 "$RUN.eval.log" >&2; exit 1; }
"$PY" - "$RUN.json" "$NAME" "$*" >> "$WORK/results.tsv" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("\t".join([sys.argv[2], sys.argv[3] or "none", str(r["step"]),
                 f"{r['fid2k_test']:.2f}", f"{r['kid2k_test']:.4f}"]))
PYEOF
tail -1 "$WORK/results.tsv"
