#!/usr/bin/env bash
# Claim (i): how much the direct-split vs feature verdict moves with the training seed alone (issue 20's
# reading of claim (i)). Runs experiments/claim1_parity.py for the two arms that decide the verdict, with
# the script's fixed hyper-parameters (FIXED), at 300 and 1,200 steps, for training seeds 1..3 (seed 0 is
# make experiments' own run, results/claim1_parity/). Each run trains its 12 codecs, evaluates them by the
# harness on the same 500 CIFAR-10 test images and writes its bd_rate.csv under
# experiments/results/claim1_seeds/seed<S>-s<steps>/. About 140 s per seed at 300 steps and 310-370 s at 1,200
# steps on 2 cores; a run whose folder already has bd_rate.csv is kept. Run from the repository root:
#
#   bash experiments/claim1_seeds.sh            # PY=.venv/bin/python by default
set -euo pipefail

PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-1 2 3}
BUDGETS=${BUDGETS:-300 1200}
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
mkdir -p experiments/results/claim1_seeds
for steps in $BUDGETS; do
  for seed in $SEEDS; do
    out=experiments/results/claim1_seeds/seed$seed-s$steps
    if [ -f "$out/bd_rate.csv" ]; then echo "seed $seed, $steps steps: kept ($out)"; continue; fi
    echo "seed $seed, $steps steps -> $out ($(date -u +%H:%M:%S))"
    "$PY" experiments/claim1_parity.py --output "$out" --seed "$seed" --threads 1 --jobs 2 --budgets "$steps" \
      --arms feature,direct-split > "$out.log" 2>&1 || { echo "FAILED: see $out.log"; exit 1; }
    grep "vs feature" "$out.log" | sed 's/^\[[^]]*\] /  /'
  done
done
