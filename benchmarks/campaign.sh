#!/usr/bin/env bash
# The results campaign (issue 25): benchmarks/tuning.toml, a few of its cells again without
# pruning (benchmarks/tuning_both_ways.toml), then benchmarks/results.toml with the tuned knobs,
# then the results document, then tune again (it reruns nothing) so that the tuning document
# compares validation with test and the choices with and without pruning, then the fine-tuned
# rows (benchmarks/finetune.toml) and their document. Every step resumes: run this again after a
# kill or in a new session, and it continues where it stopped. Each step's start and end go to stderr (UTC),
# for the per-part times in docs/results_intro.md.
#   benchmarks/campaign.sh 2>&1 | tee -a results/campaign.log
set -euo pipefail
cd "$(dirname "$0")/.."
gslbench=${GSLBENCH:-.venv/bin/gslbench}
step() {
    echo "campaign: $1 started $(date -u +%FT%TZ)" >&2
    shift
    "$@"
    echo "campaign: done $(date -u +%FT%TZ)" >&2
}
tune() {
    "$gslbench" tune benchmarks/tuning.toml --trials 8 -j 2 --doc docs/tuning.md \
        --doc-intro docs/tuning_intro.md
}
step "features" sh -c "$gslbench download fashion-mnist && $gslbench features fashion-mnist \
    && $gslbench download digits && $gslbench features digits"
step "tune" tune
step "tune without pruning" "$gslbench" tune benchmarks/tuning_both_ways.toml --trials 8 -j 2 \
    --no-prune --out results/tuning/tuned-no-prune.toml --doc results/tuning/no-prune.md
step "bench" "$gslbench" bench benchmarks/results.toml --tuned results/tuning/tuned.toml -j 2
step "report" "$gslbench" report --grid benchmarks/results.toml --tuned results/tuning/tuned.toml \
    --doc docs/results.md --doc-intro docs/results_intro.md
step "tune again" tune
step "fine-tuned rows" "$gslbench" bench benchmarks/finetune.toml -j 2 --cpus-per-cell 1
step "fine-tuned report" "$gslbench" report --grid benchmarks/finetune.toml \
    --out results/report-finetune --doc docs/finetune.md --doc-intro docs/finetune_intro.md
