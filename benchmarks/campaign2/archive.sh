#!/usr/bin/env bash
# Campaign 2 across machines: its state, committed between sessions, so that a session on a new
# machine resumes it instead of starting again (the first machine was lost with 11 h of runs).
#   benchmarks/campaign2/archive.sh save      results/ -> benchmarks/campaign2/archive/ (commit it)
#   benchmarks/campaign2/archive.sh restore   benchmarks/campaign2/archive/ -> results/ (before
#                                             benchmarks/campaign.sh, on a new machine)
# save: every finished run's records (`gslbench archive`: config, training log, metrics; the
# model, quantizer and codes left behind, their sha256 kept), the tuning's runs alike, a
# consistent copy of the tuning's Optuna storage (trials running then are failed and run again
# on restore, as after a kill), the campaign log and the pilot's estimate.
# restore: copies back what results/ lacks (runs it holds are kept); bench counts the archived
# runs done, tune counts the stored trials, and each step resumes from there. The data step
# builds the feature files again (their digests are checked against docs/features.sha256.json).
# CAMPAIGN_RESULTS and CAMPAIGN_ARCHIVE name other folders (tests/test_archive.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
gslbench=${GSLBENCH:-.venv/bin/gslbench}
python=${PYTHON:-.venv/bin/python}
results=${CAMPAIGN_RESULTS:-results}
archive=${CAMPAIGN_ARCHIVE:-benchmarks/campaign2/archive}
copy_db() {  # copy_db FROM TO: SQLite's online backup, a consistent copy while tune writes
    "$python" -c 'import sqlite3, sys
source, target = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2] + ".part")
source.backup(target)
target.close()' "$1" "$2"
    mv "$2.part" "$2"
}
keep() {  # keep FROM TO: copy a file where it exists
    if [[ -f $1 ]]; then mkdir -p "$(dirname "$2")" && cp "$1" "$2"; fi
}
case ${1:-} in
    save)
        "$gslbench" --results-dir "$results" archive "$archive"
        "$gslbench" --results-dir "$results/tuning" archive "$archive/tuning"
        if [[ -f $results/tuning/studies.db ]]; then
            copy_db "$results/tuning/studies.db" "$archive/tuning/studies.db"
        fi
        keep "$results/campaign.log" "$archive/campaign.log"
        keep "$results/campaign2/estimate.txt" "$archive/estimate.txt"
        ;;
    restore)
        mkdir -p "$results/runs" "$results/tuning/runs"
        if [[ -d $archive/runs ]]; then cp -rn "$archive/runs/." "$results/runs/"; fi
        if [[ -d $archive/tuning/runs ]]; then
            cp -rn "$archive/tuning/runs/." "$results/tuning/runs/"
        fi
        if [[ -f $archive/tuning/studies.db && ! -f $results/tuning/studies.db ]]; then
            cp "$archive/tuning/studies.db" "$results/tuning/studies.db"
        fi
        [[ -f $results/campaign.log ]] || keep "$archive/campaign.log" "$results/campaign.log"
        [[ -f $results/campaign2/estimate.txt ]] \
            || keep "$archive/estimate.txt" "$results/campaign2/estimate.txt"
        ;;
    *)
        echo "usage: $0 save|restore" >&2
        exit 2
        ;;
esac
