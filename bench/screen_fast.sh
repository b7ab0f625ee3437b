#!/bin/bash
# One row of the `fast` preset's tuning rounds (docs/BENCHMARKS.md, "Tuning the `fast` preset",
# rounds 2-7): the preset with the given changes trains on Fashion-MNIST for MINUTES of wall
# clock on one torch thread (no evaluation during training), then 2,000 samples of its last
# checkpoint are scored against the 10,000 test images. A round is two rows side by side on a
# 2-core machine:
#
#   bash bench/screen_fast.sh /tmp/scr base 8 &
#   bash bench/screen_fast.sh /tmp/scr lsgan 8 --set loss=lsgan &
#   wait; cat /tmp/scr/results.tsv
#
# Training is deterministic (seed 0 unless `--set seed=N`): two rows of the same recipe follow
# one trajectory and differ only in how many steps the clock allowed, so compare a row with the
# unchanged preset at the same step (`--steps N` with a MINUTES past the end stops it there),
# and use other seeds to see the run-to-run spread.
#
# Each row appends "name, changes, G steps, fid2k_test, kid2k_test" (tab-separated) to
# WORK_DIR/results.tsv and prints it with the load average before and after; the run is
# WORK_DIR/NAME (an existing one is an error), its logs NAME.train.log and NAME.eval.log, the
# scores NAME.json. PY picks the interpreter (default .venv/bin/python; a relative path is
# taken from the checkout root). To screen an option that is not in the code, apply its patch
# (bench/patches) to a second checkout and run that checkout's copy of this script with an
# absolute PY (a checkout has no .venv of its own): `python -m ganforge` imports the package
# of the checkout it runs in.
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 WORK_DIR NAME MINUTES [--set KEY=VALUE ...]" >&2; exit 2; }
WORK=$1 NAME=$2 MINUTES=$3
shift 3
[[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || { echo "NAME: letters, digits, '.', '_', '-'" >&2; exit 2; }
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RUN=$WORK/$NAME
[[ -e $RUN ]] && { echo "$RUN exists: pick another NAME or remove it" >&2; exit 2; }
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
"$PY" -m ganforge train --data fashion-mnist --preset fast --minutes "$MINUTES" \
    --steps 1000000 --set threads=1 --set eval_every=0 --set eval_n=0 "$@" --out "$RUN" \
    --no-progress > "$RUN.train.log" 2>&1 || { tail -20 "$RUN.train.log" >&2; exit 1; }
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
"$PY" -m ganforge evaluate "$RUN" --latest --ref fashion-mnist:test --n 2000 \
    --metrics fid,kid --json --no-progress > "$RUN.json" 2> "$RUN.eval.log" \
    || { tail -20 "$RUN.eval.log" >&2; exit 1; }
ROW=$("$PY" - "$RUN.json" "$NAME" "$*" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("\t".join([sys.argv[2], sys.argv[3] or "none", str(r["step"]),
                 f"{r['fid2k_test']:.2f}", f"{r['kid2k_test']:.4f}"]))
PYEOF
)
printf '%s\n' "$ROW" >> "$WORK/results.tsv"
echo "$ROW	(load average $LOAD_BEFORE before training, $LOAD_AFTER after)"
