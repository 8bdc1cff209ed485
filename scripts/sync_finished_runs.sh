#!/usr/bin/env bash
# Copy the finished runs of a run root into a results folder, without checkpoints: for each run folder under SRC
# that has its `done` marker, its config.json, metrics.jsonl and done go to DST/<folder>/ (existing copies are
# refreshed). Unfinished runs are skipped: they resume from SRC, and `--report-only` never counts them.
#
#   scripts/sync_finished_runs.sh /work/runs/cm/runs docs/results/colored-mnist/runs
set -euo pipefail
if (($# != 2)); then
    echo "usage: $0 SRC_RUN_ROOT DST_RESULTS_RUNS" >&2
    exit 2
fi
src=$1 dst=$2
[[ -d $src ]] || { echo "error: $src is not a folder of run folders" >&2; exit 1; }
mkdir -p "$dst"
copied=0
for run in "$src"/*/; do
    run=${run%/}
    [[ -f $run/done && -f $run/config.json && -f $run/metrics.jsonl ]] || continue
    name=$(basename "$run")
    mkdir -p "$dst/$name"
    cp "$run/config.json" "$run/metrics.jsonl" "$run/done" "$dst/$name/"
    if [[ -f $run/data.json ]]; then cp "$run/data.json" "$dst/$name/"; fi
    copied=$((copied + 1))
done
echo "$copied finished runs in $dst"
