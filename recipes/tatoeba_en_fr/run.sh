#!/usr/bin/env bash
# Tatoeba English -> French, one command: split the TSV by English sentence (seeded), train, average
# checkpoints, pick avg or best on valid, decode the test split with beam 5, score with sacreBLEU, write
# RUN/results.json.
#
#   bash recipes/tatoeba_en_fr/run.sh [CONFIG] [key.path=value ...]
#     CONFIG: transformer (default, CPU), transformer_gpu
#
#   SEQED_DATA=../shared/data bash recipes/tatoeba_en_fr/run.sh   # reads $SEQED_DATA/tatoeba/eng-fra.tsv
#   TATOEBA_TSV=~/fra.txt bash recipes/tatoeba_en_fr/run.sh        # the manythings.org file (fra-eng.zip)
#
# Tatoeba has no download here: manythings.org's fra-eng.zip must be fetched by hand (a browser works;
# it holds fra.txt, english<TAB>french<TAB>attribution). Split options: TATOEBA_SEED (1), TATOEBA_VALID
# (2000), TATOEBA_TEST (2000) English sentences. Other variables (PREPARED, RUN, BEAM, AVG_LAST, DEVICE):
# see recipes/common.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source recipes/common.sh

RECIPE=tatoeba_en_fr
CORPUS=tatoeba
DEFAULT_CONFIG=transformer
VALID=valid
TESTS="test"

prepare_corpus() {  # OUT_DIR
  local tsv=${TATOEBA_TSV:-}
  if [ -z "$tsv" ] && [ -n "${SEQED_DATA:-}" ]; then
    tsv=$SEQED_DATA/tatoeba/eng-fra.tsv
  fi
  if [ -z "$tsv" ] || [ ! -f "$tsv" ]; then
    echo "run.sh: no Tatoeba TSV${tsv:+ at $tsv}: set SEQED_DATA (a directory with tatoeba/eng-fra.tsv) or" \
         "TATOEBA_TSV (a file english<TAB>french[<TAB>...], e.g. fra.txt from manythings.org/anki/fra-eng.zip)" >&2
    exit 2
  fi
  seqed prepare tatoeba --tsv "$tsv" --out "$1" --seed "${TATOEBA_SEED:-1}" --valid "${TATOEBA_VALID:-2000}" \
    --test "${TATOEBA_TEST:-2000}"
}

recipe_main "$@"
