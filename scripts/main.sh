#!/usr/bin/env bash
# The main job end to end on the embedded default: install, import the shipped data, train the quick model,
# build and publish the indices, serve them over gRPC and send sample searches in several languages.
# `bash scripts/main.sh --exit` stops after the samples; without it the server keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
exit_flag=()
[ "${1:-}" = "--exit" ] && exit_flag=(--exit-after-samples)
bash scripts/setup.sh
export OMNISEARCH_HOME=${OMNISEARCH_HOME:-$PWD/.omnisearch}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # spinning OpenMP threads starve each other on small machines
bin=.venv/bin
step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }
echo "== home: $OMNISEARCH_HOME"
step "import the shipped data"
for source in xquad scifact esci; do
  "$bin/catalog" import "$source"
done
"$bin/catalog" split --by query --dev 0.1 --seed 0
"$bin/catalog" stats
step "stand-in legacy space (untuned backbone embeddings of item text; the shipped data has no legacy vectors)"
"$bin/encoders" legacy-standin
step "train the quick model"
"$bin/encoders" train --preset quick
step "build, verify and publish the indices"
"$bin/indexer" rebuild --checkpoint "$OMNISEARCH_HOME/checkpoints/quick"
"$bin/indexer" status
step "serve and send sample searches"
exec "$bin/engine" serve --port "${OMNISEARCH_PORT:-50051}" --samples builtin "${exit_flag[@]}"
