#!/usr/bin/env bash
# The demo: train a small English->French Transformer on the bundled demo corpus (no network),
# translate sentences it never saw, and score the demo test set with sacreBLEU.
#   bash recipes/demo/run.sh                 # ~3 minutes of training on 2 CPU cores
#   RUN=runs/demo2 bash recipes/demo/run.sh train.max_minutes=1   # extra args are config overrides
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${RUN:-runs/demo}

if [ -f "$RUN/checkpoint_last.pt" ]; then
  echo "== $RUN already holds a trained demo model: skipping training (delete $RUN to train again)"
else
  echo "== training (config: recipes/demo/transformer.yaml, run directory: $RUN)"
  seqed train recipes/demo/transformer.yaml out_dir="$RUN" "$@"
fi

echo "== translating the demo test set (500 sentences not seen in training) with beam 5"
seqed translate -c "$RUN" --beam 5 -i data/demo/test.en -o "$RUN/test.hyp.fr"
seqed score --ref data/demo/test.fr --hyp "$RUN/test.hyp.fr" | tee "$RUN/test.score.txt"

echo "== a few test sentences (never seen in training), translated from stdin:"
head -n 8 data/demo/test.en > "$RUN/sample.en"
seqed translate -c "$RUN" --beam 5 < "$RUN/sample.en" > "$RUN/sample.fr"
paste "$RUN/sample.en" "$RUN/sample.fr" | sed 's/\t/\n    => /'
