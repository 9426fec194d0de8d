#!/usr/bin/env bash
# Rebuild the model bundled with the package (edge/models/leukonet_int8.{tflite,json})
# with the project's own commands, from the real LMU data in ../shared/data: the differential
# LeukoNet over every white-cell type, trained on aml-lmu plus lmu-thumbs.
#
#   make default-model            (or: bash tools/build_default_model.sh [SHARED_DATA_DIR] [WORK_DIR])
#
# Needs the training extra: pip install -e '.[train]'. Takes 15-40 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
WORK="${2:-runs/default-model}"
EXTERNAL="${EXTERNAL:-$DATA/pbc-external}"
LEUKOEDGE="${LEUKOEDGE:-leukoedge}"

set -x
"$LEUKOEDGE" prepare-lmu --aml-lmu "$DATA/aml-lmu" --thumbs "$DATA/lmu-thumbs" -o "$WORK/lmu-differential.csv"
"$LEUKOEDGE" train --task differential --data "$WORK/lmu-differential.csv" --out "$WORK/run" --seed 0 \
  --epochs 60 --patience 15 --label-smoothing 0.05
# An accuracy gate that fails (exit 3) still writes the bundle; the bundle records which gate
# failed and finalize_default_model.py names it among the model's limits.
status=0
"$LEUKOEDGE" quantize "$WORK/run" --out "$WORK/bundle" --name leukonet || status=$?
if [ "$status" -eq 3 ]; then
  echo "warning: an int8 accuracy gate failed; see $WORK/bundle/report" >&2
elif [ "$status" -ne 0 ]; then
  exit "$status"
fi
if [ -d "$EXTERNAL" ]; then
  "$LEUKOEDGE" evaluate --model "$WORK/run" --data "$EXTERNAL" --out "$WORK/external-float"
fi
set +x
"${PYTHON:-python3}" tools/finalize_default_model.py "$WORK" edge/models "$EXTERNAL"
echo "bundled model written to edge/models/; check 'leukoedge models'"
