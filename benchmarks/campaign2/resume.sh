#!/usr/bin/env bash
# Start or resume campaign 2 in the background, on this machine or a new one: restore what
# results/ lacks from the committed archive (archive.sh restore), note the restart, the commit
# and the machine's CPU and kernels in the campaign log, then run benchmarks/campaign.sh detached (nice 2, its own session),
# its output appended to results/campaign.log. CAMPAIGN_STAGES, CAMPAIGN_PILOTS, GSLBENCH and
# PYTHON pass through to it. Stop it with: kill -TERM -- -PGID (the pid printed is its group).
#   CAMPAIGN_PILOTS=1 benchmarks/campaign2/resume.sh "why it was restarted"
set -euo pipefail
cd "$(dirname "$0")/../.."
bash benchmarks/campaign2/archive.sh restore
echo "campaign: restarted at $(date -u +%FT%TZ) on $(git rev-parse --short HEAD)" \
    "(${1:-a resume}; stages ${CAMPAIGN_STAGES:-1 2 3}, pilots ${CAMPAIGN_PILOTS:-1 2 3 4 5 6 7})" \
    >> results/campaign.log
# the machine: training is reproducible on one kind of CPU only (docs/guide/grids.md)
"${PYTHON:-.venv/bin/python}" -c 'from gslbench.devices import cpu_text, describe_cpu
print(f"campaign: machine: {cpu_text(describe_cpu())}")' >> results/campaign.log
nohup nice -n 2 setsid bash benchmarks/campaign.sh >> results/campaign.log 2>&1 < /dev/null &
echo "campaign 2 runs in the background (process group $!); its log: results/campaign.log"
