#!/usr/bin/env bash
# The main job end to end on the embedded default: install, import the shipped data, split, and show the catalog.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMNISEARCH_HOME=${OMNISEARCH_HOME:-$PWD/.omnisearch}
bin=.venv/bin
echo "== home: $OMNISEARCH_HOME"
for source in xquad scifact esci; do
  "$bin/catalog" import "$source"
done
"$bin/catalog" split --by query --dev 0.1 --seed 0
"$bin/catalog" stats
