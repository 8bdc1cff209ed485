#!/usr/bin/env bash
# Table 1 + Fig. 4 in full (10 seeds x every method + the plain-Eq. 25 λ search, float32) on one GPU in one command,
# then a bfloat16 check on 3 seeds if time is left; at most 8 files under $OUT.
#
# Run from the repository root on the device machine; nothing is installed (python3 there has torch + CUDA, typer,
# rich, pandas, scipy, matplotlib). The four MNIST *training* and test .gz files travel in the folder named by DATA
# (default gpu-data, which must hold mnist/train-images-idx3-ubyte.gz etc.; it is git-ignored, so carry it):
#
#   mkdir -p gpu-data/mnist && cp ../shared/data/mnist/*.gz gpu-data/mnist/      # once, on the CPU machine
#   device run: carry ["gpu-data"], timeout_s 480, command "bash scripts/gpu_colored_mnist.sh"
#
# Time plan (LIMIT seconds in all, default 420): four worker processes share the GPU (the sweep's local backend; each
# run is one resumable, locked run folder, so a round killed by its time limit leaves checkpoints the next resumes):
#   round 1: the λ search and ERM / SD (released) / IRM / V-REx / oracle          (about 70,000 full-batch steps)
#   round 2: whatever round 1 left, e.g. the plain Eq. 25 rows once the search chose λ (20,000-40,000 steps)
#   round 3: bfloat16 runs of ERM, SD, IRM, V-REx, oracle on seeds 0-2 if >= 100 s are left (15,000 steps)
#   tables: float32 Table 1, Fig. 4, λ search; the bfloat16 tables with the float32-vs-bfloat16 check.
# Estimate (H200, float32 without TF32): a step is 35 GFLOP (45,000 examples), ~1.0 ms at ~35 TFLOP/s plus ~0.2 ms
# of element-wise passes; ~60 kernel launches and one host sync per step, overlapped across the 4 processes, so
# ~1.2-1.5 ms per step in aggregate; ~20 ms per evaluation (every 50 steps, 100,000 examples), ~1.5 s of CPU per
# data load, ~10 s of start-up per process. Round 1 (70,000 steps) ~130 s, round 2 (20,000-40,000) ~50-80 s,
# round 3 (15,000 bfloat16 steps) ~40 s, tables and packing ~30 s: 4-5 minutes. Each round stops on time
# (LIMIT), and the tables then say how many seeds finished.
set -uo pipefail

START=$SECONDS
LIMIT=${LIMIT:-420}
DATA=${DATA:-gpu-data}
WORK=${WORK:-/tmp/colored-mnist}
SHARDS=${SHARDS:-4}
OUT=${OUT:-outputs/gpu-colored-mnist}
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA <<<"${EXTRA:-}" # e.g. EXTRA=--quick DEVICE=cpu SHARDS=2 for a dry run of this script on a CPU
mkdir -p "$WORK" "$OUT"
export PYTHONPATH=src OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} MKL_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONUNBUFFERED=1
CLI=(python3 -m gradstarve.cli reproduce colored-mnist --data-root "$DATA" --device "$DEVICE" --runs "$WORK/runs")
CLI+=("${EXTRA[@]}")
LOG="$WORK/log.txt"

left() { echo $((LIMIT - (SECONDS - START))); }
say() { echo "[$((SECONDS - START)) s] $*" | tee -a "$LOG"; }

round() {  # round NAME RESERVE_SECONDS ARGS...: one launch with SHARDS workers, stopped RESERVE s before the limit
    local name=$1 reserve=$2
    shift 2
    local budget=$(($(left) - reserve))
    if ((budget < 20)); then
        say "skip $name: $(left) s left"
        return
    fi
    say "$name: $SHARDS workers, at most $budget s"
    # The sweep's local backend: SHARDS worker processes share the plan (each run folder is locked while it trains);
    # a launch killed by its time limit leaves checkpoints, and the next round resumes them.
    timeout --signal=TERM --kill-after=10 "$budget" "${CLI[@]}" --out "$WORK/round-$name" --workers "$SHARDS" \
        --threads 1 "$@" >"$WORK/$name-0.log" 2>&1
    say "$name done; finished runs: $(find "$WORK/runs" -name done | wc -l)"
    tail -n 3 "$WORK/$name-0.log" >>"$LOG"
}

nvidia-smi -L 2>&1 | tee -a "$LOG"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"
ls -l "$DATA/mnist" 2>&1 | tee -a "$LOG"

round float32-1 150
round float32-2 60
BF16=(--precision bfloat16 --seeds 3 --methods erm,sd,irm,vrex,oracle)
if (($(left) >= 100)); then
    round bfloat16 45 "${BF16[@]}"
else
    say "skip bfloat16 check: $(left) s left"
fi

say "tables"
"${CLI[@]}" --out "$WORK/tables" --report-only >"$WORK/tables.log" 2>&1
"${CLI[@]}" --out "$WORK/tables-bfloat16" --report-only "${BF16[@]}" >"$WORK/tables-bfloat16.log" 2>&1
cat "$WORK/tables/table1.md" >>"$LOG" 2>/dev/null
cat "$WORK/tables-bfloat16/precision_check.md" >>"$LOG" 2>/dev/null
say "packing"

# At most 8 files come back: the tables (all formats) and logs, the run folders without checkpoints (config, metrics,
# done: enough to rebuild every table with --report-only), and the main tables / figure unpacked for reading.
tar czf "$OUT/colored_mnist_tables.tar.gz" -C "$WORK" tables tables-bfloat16 $(cd "$WORK" && ls ./*.log)
tar czf "$OUT/colored_mnist_runs.tar.gz" -C "$WORK" --exclude=checkpoint.pt runs
for file in tables/table1.md tables/fig4.md tables/fig4.png tables/sd_lambda_search.md \
    tables-bfloat16/precision_check.md; do
    [[ -f "$WORK/$file" ]] && cp "$WORK/$file" "$OUT/$(echo "$file" | tr / _)"
done
say "done"
cp "$LOG" "$OUT/log.txt"
ls -l "$OUT"
