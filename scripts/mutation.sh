#!/usr/bin/env bash
# Mutation testing of the core functions: sampling filters and guidance, codebook metrics, judge scores and
# the Fréchet distance, the quantizers' indices -> latents, the stratified split and the champion rule.
#
# mutmut (pinned in the dev extra, configured in pyproject.toml [tool.mutmut]) copies model/ and tasks/ to
# mutants/ (git-ignored), mutates the files listed there and runs only the mutants of the functions in
# TARGETS below, each against the fast tests that reach it. Survivors are listed; the last line is the score.
# A fresh run each time (mutants/ is removed first); afterwards `.venv/bin/mutmut show NAME` shows a mutant.
#
# Usage: scripts/mutation.sh [jobs]   (parallel mutant workers, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-2}
MUTMUT=.venv/bin/mutmut
if [ ! -x "$MUTMUT" ]; then
    echo "mutation.sh: $MUTMUT not found; install the dev extra first (scripts/setup.sh)" >&2
    exit 2
fi

# fnmatch globs over mutant names: <module>.x_<function>__mutmut_<n>, methods as x<sep>Class<sep>method
TARGETS=(
    "model.sampling.x_top_k_filter__mutmut_*"
    "model.sampling.x_top_p_filter__mutmut_*"
    "model.sampling.x_guided_logits__mutmut_*"
    "model.sampling.x_sample_next__mutmut_*"
    "model.sampling.x_check_sampling_args__mutmut_*"
    "model.metrics.x_code_counts__mutmut_*"
    "model.metrics.x_entropy_nats__mutmut_*"
    "model.metrics.x_codebook_usage__mutmut_*"
    "model.metrics.x_psnr__mutmut_*"
    "model.metrics.x_classification_report__mutmut_*"
    "model.metrics.x_conditional_accuracy__mutmut_*"
    "model.metrics.x_feature_stats__mutmut_*"
    "model.metrics.x_frechet_distance__mutmut_*"
    "model.metrics.x_frechet_from_features__mutmut_*"
    "model.vqvae.x?LucidrainsQuantizer?indices_to_latents__mutmut_*"
    "model.vqvae.x?SimpleQuantizer?indices_to_latents__mutmut_*"
    "model.vqvae.x?VQVAE?indices_to_latents__mutmut_*"
    "model.data.x_stratified_split__mutmut_*"
    "tasks.champion.x_is_better__mutmut_*"
)

export OMP_NUM_THREADS=1 GALAXY_PROGRESS=0 PYTHONDONTWRITEBYTECODE=1
rm -rf mutants
mkdir -p mutants
start=$(date +%s)
if ! "$MUTMUT" run --max-children "$JOBS" "${TARGETS[@]}" > mutants/run.log 2>&1; then
    tail -n 40 mutants/run.log >&2
    echo "mutation.sh: mutmut run failed (full log: mutants/run.log)" >&2
    exit 1
fi

# Score from mutmut's per-file results (mutants/<file>.meta), over the targeted functions only.
.venv/bin/python - "$(($(date +%s) - start))" "${TARGETS[@]}" <<'EOF'
import fnmatch
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

seconds, patterns = int(sys.argv[1]), sys.argv[2:]
status = {}
for meta in sorted(Path("mutants").rglob("*.py.meta")):
    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            status[name] = status_by_exit_code[code]
if not status:
    sys.exit("mutation.sh: no mutants of the targeted functions were found (renamed functions?)")
missing = [p for p in patterns if not any(fnmatch.fnmatch(name, p) for name in status)]
if missing:  # a function was renamed or moved: TARGETS (and pyproject's only_mutate) must follow it
    sys.exit(f"mutation.sh: no mutants match {', '.join(missing)}; update TARGETS in scripts/mutation.sh")
killed = sum(s in ("killed", "timeout") for s in status.values())
others = sorted(n for n, s in status.items() if s not in ("killed", "timeout"))
for name in others:
    print(f"survived ({status[name]}): {name}")
print(f"{len(status)} mutants in {seconds} s; {len(others)} not killed (`.venv/bin/mutmut show NAME` shows one)")
print(f"mutation score: {killed} / {len(status)} killed, {100 * killed / len(status):.1f}%")
EOF
