#!/usr/bin/env bash
# WMT14 English -> French, one command: stream the training data from the Hugging Face hub, fetch
# newstest2014 with sacreBLEU, train, average checkpoints, pick avg or best on newstest2013, decode
# newstest2014 with beam 5, score, write RUN/results.json.
#
#   bash recipes/wmt14_en_fr/run.sh [CONFIG] [key.path=value ...]
#     CONFIG: transformer_base (default, GPU), transformer_big (GPU), transformer_cpu (2 cores, 60 min)
#
#   bash recipes/wmt14_en_fr/run.sh transformer_base                  # needs the network for the data
#   LIMIT=4000000 bash recipes/wmt14_en_fr/run.sh transformer_base    # fewer training pairs (less RAM)
#   SEQED_DATA=/data bash recipes/wmt14_en_fr/run.sh                  # /data/wmt14 prepared earlier with
#                                                                     # `seqed prepare wmt14 --out /data/wmt14`
#   NPROC=8 bash recipes/wmt14_en_fr/run.sh transformer_base train.max_tokens=16384 train.accum=1   # 8 GPUs
# The training data is tokenized once by `seqed preprocess` into $PREPARED/wmt14/binarized_* (data.binarized)
# before training; several nodes: README.md here.
# LIMIT: training pairs taken from the shuffled stream (default 10M; 1M for transformer_cpu). Each LIMIT
# gets its own prepared directory, runs/data/wmt14_<LIMIT>/wmt14. Other variables (PREPARED, RUN, BEAM,
# AVG_LAST, DEVICE): see recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

RECIPE=wmt14_en_fr
CORPUS=wmt14
DEFAULT_CONFIG=transformer_base
VALID=valid
TESTS="test"

config=$DEFAULT_CONFIG
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then config=$1; fi
if [ "$config" = transformer_cpu ]; then LIMIT=${LIMIT:-1000000}; else LIMIT=${LIMIT:-10000000}; fi
if [ -n "${SEQED_DATA:-}" ] && [ -f "$SEQED_DATA/wmt14/prepare.json" ]; then
  PREPARED=${PREPARED:-$SEQED_DATA}  # a corpus prepared earlier, e.g. on a machine with network
fi
PREPARED=${PREPARED:-runs/data/wmt14_$LIMIT}

prepare_corpus() {  # OUT_DIR
  seqed prepare wmt14 --out "$1" --limit "$LIMIT" --shuffle-seed 1
}

recipe_main "$@"
