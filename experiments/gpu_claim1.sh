#!/usr/bin/env bash
# Claim (i) at GPU scale (issue 20): the one command to run on a GPU machine that has python3 with torch
# (CUDA), torchvision, numpy, scipy, pandas, matplotlib, scikit-learn, tqdm, pyyaml, pillow and opencv, but
# no network. Run from the repository root, with the ignored folders .whl/ (the other wheels this project
# imports, cp312 manylinux x86_64: compressai and its imports, pydantic, omegaconf, pycocotools, bjontegaard)
# and .gpu_data/ (cifar10_subset.tar.gz: the 10,000 CIFAR-10 train images of ../shared and the 500
# class-balanced test images the claim evaluates on, same layout and labels CSV) carried along.
#
#   OUT=/some/folder bash experiments/gpu_claim1.sh      # results: $OUT/claim1_gpu.tar.gz, $OUT/claim1_gpu.log
#
# Steps: (1) install the wheels into a private folder (pip --no-index, else unzip), (2) unpack the data,
# (3) check the imports and the GPU, (4) measure the aggregate training steps/s of claim (i)'s arms with
# GPU_PROCS processes on the GPU (experiments/bench_train_steps.py) -- and with CPU_PROCS processes on the CPU
# cores when the GPU is slow or fails -- and pick the device with the higher rate, (5) run
# experiments/claim1_parity.py with every arm, the pilot procedure of its docstring (dropped, with the fixed
# grids, when the measured rate says it would not leave time for the first rung), the ladder 300 / 1,200 /
# 4,800 steps times SCALE, and its time guard (--max-wall) set so the whole script ends within LIMIT_S
# seconds (a rung, or its last arms, that would not fit is skipped and the record says so), (6) pack the
# results (without the checkpoints) into $OUT/claim1_gpu.tar.gz. Every step prints its timing.
set -uo pipefail

LIMIT_S=${LIMIT_S:-510}          # the whole script, seconds
GPU_PROCS=${GPU_PROCS:-12}       # training processes sharing the GPU
CPU_PROCS=${CPU_PROCS:-16}       # training processes when training runs on the CPU cores
EVAL_JOBS=${EVAL_JOBS:-16}       # harness workers (CPU)
SCALE=${SCALE:-1}                # multiplies the ladder 300 / 1200 / 4800
BUDGETS=${BUDGETS:-300,1200,4800}
EXTRA_ARGS=${EXTRA_ARGS:-}       # more claim1_parity.py arguments (a local smoke test of this script: --quick)
BENCH_STEPS=${BENCH_STEPS:-40}
PY=${PY:-python3}
SKIP_WHEELS=${SKIP_WHEELS:-}     # 1: use the packages $PY already has (a local test of this script)
CONTINUE_FROM=${CONTINUE_FROM:-} # an earlier run's claim1_parity.json: train on cuda without the speed test, keep
                                 # its pilot choices and rungs, run only the budgets it did not (--continue-from)
OUT=${OUT:-$PWD/outputs/gpu_claim1}
WORK=${WORK:-/tmp/claim1_gpu}
T0=$(date +%s)
mkdir -p "$OUT" "$WORK"

elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[gpu_claim1 +$(elapsed)s] $*"; }

main() {
    say "host $(hostname), $(nproc) cores; limit ${LIMIT_S} s"
    # (1) packages
    local site=$WORK/site
    if [ -n "$SKIP_WHEELS" ]; then
        say "wheels not installed (SKIP_WHEELS)"
    elif $PY -m pip --version >/dev/null 2>&1 && \
       $PY -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl; then
        say "installed $(ls .whl/*.whl | wc -l) wheels with pip into $site"
    else
        $PY - "$site" <<'EOF' || { say "FAILED: wheels"; return 1; }
import glob, sys, zipfile
for w in sorted(glob.glob(".whl/*.whl")):
    zipfile.ZipFile(w).extractall(sys.argv[1])
print("unzipped", len(glob.glob(".whl/*.whl")), "wheels")
EOF
        say "unzipped the wheels into $site"
    fi
    export PYTHONPATH=$site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONWARNINGS=ignore OMP_NUM_THREADS=1 MPLBACKEND=Agg
    # (2) data
    mkdir -p "$WORK/shared/data"
    tar xzf .gpu_data/cifar10_subset.tar.gz -C "$WORK/shared/data" || { say "FAILED: data"; return 1; }
    export VCM_SHARED=$WORK/shared
    say "data: $(find "$VCM_SHARED/data/cifar10/train" -name '*.png' | wc -l) train, \
$(find "$VCM_SHARED/data/cifar10/test" -name '*.png' | wc -l) test images"
    # (3) imports and the GPU
    $PY - <<'EOF' || { say "FAILED: imports"; return 1; }
import sys, numpy, torch, compressai, pydantic, omegaconf
import vcm_plugin.pipeline.run, vcm_plugin.splitting.codecs, vcm_plugin.training.task_codec  # noqa: F401
print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), compressai {getattr(compressai, '__version__', '?')}, pydantic {pydantic.__version__}")
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
EOF
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    # (4) which device trains faster: the GPU shared by GPU_PROCS processes, or CPU_PROCS CPU processes
    local device=cpu jobs=$CPU_PROCS gpu_rate=0 cpu_rate=0 rate=0
    local -a pilot=()
    if [ -n "$CONTINUE_FROM" ]; then  # the earlier run's pilot choices and rungs, on the GPU it measured
        device=cuda jobs=$GPU_PROCS pilot=(--continue-from "$CONTINUE_FROM")
    else
        timeout 150 $PY experiments/bench_train_steps.py --device cuda --procs "$GPU_PROCS" --steps "$BENCH_STEPS" --warmup 5 \
            --json "$WORK/bench_cuda.json" --barrier-s 100
        gpu_rate=$($PY -c "import json; print(json.load(open('$WORK/bench_cuda.json'))['steps_per_s'])" 2>/dev/null \
                   || echo 0)
        say "GPU, $GPU_PROCS processes: $gpu_rate steps/s"
        if $PY -c "import sys; sys.exit(0 if float('$gpu_rate') >= 400 else 1)"; then
            device=cuda jobs=$GPU_PROCS rate=$gpu_rate
        else
            timeout 120 $PY experiments/bench_train_steps.py --device cpu --procs "$CPU_PROCS" --steps 8 --warmup 2 \
                --json "$WORK/bench_cpu.json" --barrier-s 80
            cpu_rate=$($PY -c "import json; print(json.load(open('$WORK/bench_cpu.json'))['steps_per_s'])" \
                       2>/dev/null || echo 0)
            say "CPU, $CPU_PROCS processes: $cpu_rate steps/s"
            if $PY -c "import sys; sys.exit(0 if float('$gpu_rate') >= float('$cpu_rate') and float('$gpu_rate') > 0 else 1)"; then
                device=cuda jobs=$GPU_PROCS rate=$gpu_rate
            else
                rate=$cpu_rate
            fi
        fi
    fi
    # (5) claim (i): pilot + ladder, under the time guard
    local left=$(( LIMIT_S - $(elapsed) - 25 ))  # 25 s for packing the results
    if [ -z "$CONTINUE_FROM" ] && [ -n "$($PY - "$rate" "$left" "$SCALE" <<'EOF'
import sys
rate, left, scale = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
steps = {"pilot": 4 * 14 * 300 * scale, "300": 24 * 300 * scale, "1200": 24 * 1200 * scale, "4800": 24 * 4800 * scale}
est = {k: v / max(rate, 1e-9) for k, v in steps.items()}
evals = 3 * 35  # about 35 s per rung of 24 points x 500 images on 16 cores
print(f"# estimate at {rate:g} steps/s: " + ", ".join(f"{k} {v:.0f} s" for k, v in est.items())
      + f", evaluation about {evals} s; {left:.0f} s left", file=sys.stderr)
print("--pilot" if est["pilot"] + est["300"] + 35 + 30 < 0.6 * left else "")
EOF
)" ]; then
        pilot=(--pilot)
    fi
    say "training on $device with $jobs processes (${rate} steps/s measured, 0: not measured when continuing); \
${left} s left for claim (i); ${pilot[*]:-no pilot (fixed grids)}"
    if [ "$left" -lt 60 ]; then say "FAILED: no time left"; return 1; fi
    # shellcheck disable=SC2086 (word splitting of $EXTRA_ARGS wanted)
    timeout -k 5 $(( left + 10 )) $PY experiments/claim1_parity.py --output "$WORK/claim1_parity_gpu" "${pilot[@]}" \
        --budgets "$BUDGETS" --scale "$SCALE" --device "$device" --jobs "$jobs" --eval-jobs "$EVAL_JOBS" \
        --max-wall "$left" $EXTRA_ARGS
    local rc=$?
    say "claim1_parity.py exit $rc"
    $PY - "$WORK" <<'EOF' || true
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
info = {"bench": {}}
for name in ("bench_cuda", "bench_cpu"):
    if (work / f"{name}.json").exists():
        info["bench"][name] = json.loads((work / f"{name}.json").read_text())
(work / "claim1_parity_gpu").mkdir(parents=True, exist_ok=True)
(work / "claim1_parity_gpu" / "gpu_bench.json").write_text(json.dumps(info, indent=1) + "\n")
EOF
    return $rc
}

main 2>&1 | tee "$OUT/claim1_gpu.log"
RC=${PIPESTATUS[0]}
# (6) the results, without checkpoints (*.pt) and lock files
if [ -d "$WORK/claim1_parity_gpu" ]; then
    tar czf "$OUT/claim1_gpu.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='.vcm-run.lock' claim1_parity_gpu
    if [ "$(stat -c %s "$OUT/claim1_gpu.tar.gz")" -gt 15000000 ]; then  # the per-image stores are the bulk
        tar czf "$OUT/claim1_gpu.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='.vcm-run.lock' \
            --exclude='*.sqlite' claim1_parity_gpu
    fi
    cp "$WORK/claim1_parity_gpu/REPORT_section.md" "$OUT/" 2>/dev/null
    cp "$WORK/claim1_parity_gpu/gap.png" "$WORK/claim1_parity_gpu/rd.png" "$OUT/" 2>/dev/null
fi
echo "[gpu_claim1 +$(( $(date +%s) - T0 ))s] done, exit $RC; $(ls -1 "$OUT" | wc -l) files in $OUT" \
    | tee -a "$OUT/claim1_gpu.log"
exit "$RC"
