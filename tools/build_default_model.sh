#!/usr/bin/env bash
# Rebuild the model bundled with the package (edge/models/leukonet_int8.{tflite,json})
# with the project's own commands, from the real AML data in ../shared/data/aml-lmu.
#
#   make default-model            (or: bash tools/build_default_model.sh [DATA_DIR] [WORK_DIR])
#
# Needs the training extra: pip install -e '.[train]'. Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/aml-lmu}"
WORK="${2:-runs/default-model}"
EXTERNAL="${EXTERNAL:-../shared/data/pbc-external}"
LEUKOEDGE="${LEUKOEDGE:-leukoedge}"

set -x
"$LEUKOEDGE" train --data "$DATA" --out "$WORK/run" --seed 0
"$LEUKOEDGE" quantize "$WORK/run" --data "$DATA" --out "$WORK/bundle" --name leukonet
if [ -d "$EXTERNAL" ]; then
  "$LEUKOEDGE" evaluate --model "$WORK/run" --data "$EXTERNAL" --out "$WORK/external-float"
fi
set +x
"${PYTHON:-python3}" tools/finalize_default_model.py "$WORK" edge/models "$EXTERNAL"
echo "bundled model written to edge/models/; check 'leukoedge models'"
