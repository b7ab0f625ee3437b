#!/bin/bash
# Fashion-MNIST, the command without flags: today's default (the recipe it picks for 60,000
# images: the fast preset) for MINUTES of wall clock, and the old default (vanilla DCGAN, the
# 1,000 steps `ganforge train --data fashion-mnist` gave before recipes), each scored as
# fid5k_test (5,000 samples vs the 10,000 test images), with a 6x6 sample grid of each.
#
#   bash bench/default_fmnist.sh [WORK_DIR] [MINUTES]      # default: a temp dir, 10 minutes
#   ROWS=new bash bench/default_fmnist.sh ...             # only today's default
#   SEED=1 ROWS=new bash bench/default_fmnist.sh ...      # today's default with --seed 1
#   SET="z_dim=8 lr_g=1e-3" ROWS=new bash ...            # today's default with --set z_dim=8 ...
#
# Run it on an otherwise idle machine: the default's figure depends on the steps it gets.
set -euo pipefail
WORK=${1:-$(mktemp -d /tmp/default-fmnist.XXXXXX)}
MINUTES=${2:-10}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)  # relative to where it was called from
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROWS=${ROWS:-new old}
SETS=()
read -ra KVS <<< "${SET:-}"  # split on spaces, no glob expansion
for kv in ${KVS[@]+"${KVS[@]}"}; do SETS+=(--set "$kv"); done
for row in $ROWS; do
    [[ $row == new || $row == old ]] || { echo "ROWS: new and/or old, not '$row'" >&2; exit 2; }
done
for row in $ROWS; do
    [[ -e $WORK/$row ]] && { echo "$WORK/$row exists: give an empty WORK_DIR" >&2; exit 2; }
done
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ $ROWS == *new* ]] && "$PY" -m ganforge train --data fashion-mnist --minutes "$MINUTES" \
    ${SEED:+--seed "$SEED"} ${SETS[@]+"${SETS[@]}"} --out "$WORK/new" --no-progress
[[ $ROWS == *old* ]] && "$PY" -m ganforge train --data fashion-mnist --variant dcgan \
    --out "$WORK/old" --no-progress
echo "load after training: $(cut -d' ' -f1-3 /proc/loadavg)"
for row in $ROWS; do
    "$PY" -m ganforge evaluate "$WORK/$row" --ref fashion-mnist:test --n 5000 --metrics fid,kid \
        --json --no-progress > "$WORK/$row.json"
    "$PY" -m ganforge sample "$WORK/$row" --n 36 --grid "$WORK/$row-grid.png" --seed 0 >/dev/null
    "$PY" - "$WORK/$row.json" "$row" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: fid5k_test {r['fid5k_test']:.2f}, kid5k_test {r['kid5k_test']:.4f} "
      f"(checkpoint of step {r['step']})")
PYEOF
done
echo "grids: $(for row in $ROWS; do printf '%s ' "$WORK/$row-grid.png"; done)"
