#!/usr/bin/env bash
# Multi30k English -> French, one command: prepare the data, train, average checkpoints, pick avg or best
# on val, decode test2016 and test2017 (and mscoco2017) with beam 5, score with sacreBLEU, write
# RUN/results.json.
#
#   bash recipes/multi30k_en_fr/run.sh [CONFIG] [key.path=value ...]
#     CONFIG: transformer (default), transformer_gpu, rnn_attention, rnn_fixed, gru_luong
#
#   SEQED_DATA=../shared/data bash recipes/multi30k_en_fr/run.sh rnn_attention   # local copy, no network
#   bash recipes/multi30k_en_fr/run.sh                                # downloads the raw files (checksummed)
#   RUN=runs/quick bash recipes/multi30k_en_fr/run.sh transformer train.max_minutes=10
#   bash recipes/multi30k_en_fr/run.sh transformer_gpu                # 5 minutes on one GPU
#
# Other environment variables (PREPARED, RUN, BEAM, AVG_LAST, DEVICE): see recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

RECIPE=multi30k_en_fr
CORPUS=multi30k
DEFAULT_CONFIG=transformer
VALID=val
TESTS="test2016 test2017 mscoco2017"

prepare_corpus() {  # OUT_DIR
  if [ -n "${SEQED_DATA:-}" ]; then
    seqed prepare multi30k --data-dir "$SEQED_DATA/multi30k" --out "$1"
  else
    seqed prepare multi30k --out "$1"
  fi
}

recipe_main "$@"
