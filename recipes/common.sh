# The steps every recipe shares, sourced by recipes/<name>/run.sh (not run on its own).
#
# A run.sh sets RECIPE (its directory name), CORPUS (the corpus directory name), DEFAULT_CONFIG, VALID
# (the validation split), TESTS (the test splits), defines `prepare_corpus OUT_DIR`, then calls
#   recipe_main "$@"
# which does: prepare the data -> train -> average the last checkpoints -> pick the averaged or the best
# checkpoint by validation BLEU -> choose the length penalty on validation -> decode the test sets with
# beam search (and greedy, for comparison) -> sacreBLEU -> RUN/results.json.
#
# Arguments: [CONFIG] [key.path=value ...]   (CONFIG is a YAML name in the recipe's directory)
# Environment (all optional):
#   SEQED_DATA  directory holding the raw corpora (<corpus>/...); unset: download them
#   PREPARED    where prepared corpora go (default runs/data); the YAMLs read $SEQED_DATA/<corpus>/...,
#               so training runs with SEQED_DATA=$PREPARED
#   RUN         run directory (default runs/<recipe>_<config>)
#   BEAM        beam size for validation selection and test decoding (default 5)
#   AVG_LAST    how many of the newest checkpoints to average (default 5; 0 or 1: no averaging)
#   DEVICE      decoding device: auto | cpu | cuda (default auto)
#   LENGTH_PENALTIES  GNMT alphas tried with the beam on the validation set; the best BLEU decodes the
#               tests (default "0.6 1.0 1.5 2.0"; one value skips the choice)
#   NPROC       training processes on this machine (default 1): above 1, training runs under
#               `torchrun --standalone --nproc_per_node $NPROC` (one per GPU; docs/distributed.md)
# A YAML that sets data.binarized is preprocessed first (`seqed preprocess`, once: an up-to-date
# directory is kept), so the training processes only map the token ids.
# A run directory that already holds a finished training is not trained again (delete RUN/train.done
# to retrain); an interrupted one resumes.

set -euo pipefail
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}

recipe_main() {
  local config=$DEFAULT_CONFIG
  if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then config=$1; shift; fi
  local yaml=recipes/$RECIPE/$config.yaml
  if [ ! -f "$yaml" ]; then
    echo "run.sh: no config $yaml; choose one of:" \
      $(cd "recipes/$RECIPE" && ls -- *.yaml | sed 's/\.yaml$//') >&2
    exit 2
  fi
  local run=${RUN:-runs/${RECIPE%_en_fr}_$config}
  local prepared=${PREPARED:-runs/data}
  local data=$prepared/$CORPUS
  local beam=${BEAM:-5} avg_last=${AVG_LAST:-5} device=${DEVICE:-auto}
  local alphas=${LENGTH_PENALTIES:-0.6 1.0 1.5 2.0}
  trap 'echo "== interrupted: run the same command again to resume" >&2; exit 130' INT TERM

  echo "== [1/5] data: $data"
  if [ -f "$data/prepare.json" ]; then
    echo "   already prepared (delete $data to prepare again)"
  else
    prepare_corpus "$data"
  fi

  echo "== [2/5] training $yaml into $run"
  mkdir -p "$run"
  local train=(seqed train)
  if [ "${NPROC:-1}" -gt 1 ]; then
    train=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m seqed train)
  fi
  if [ -f "$run/train.done" ]; then
    echo "   $run/train.done exists: not training again (delete it, or choose another RUN=...)"
  else
    if grep -Eq '^ +binarized: *[^ "#]' "$yaml"; then
      SEQED_DATA=$prepared seqed preprocess "$yaml" out_dir="$run" "$@"
    fi
    if [ -f "$run/checkpoint_last.pt" ]; then
      SEQED_DATA=$prepared "${train[@]}" "$yaml" out_dir="$run" "$@" --resume
    else
      SEQED_DATA=$prepared "${train[@]}" "$yaml" out_dir="$run" "$@"
    fi
  fi
  touch "$run/train.done"

  echo "== [3/5] averaging the last $avg_last checkpoints, then picking avg or best by $VALID BLEU (beam $beam)"
  local candidates=(checkpoint_best.pt)
  local n_steps
  n_steps=$(find "$run" -maxdepth 1 -name 'checkpoint_[0-9]*.pt' | wc -l)
  if [ "$avg_last" -gt 1 ] && [ "$n_steps" -gt 1 ]; then
    seqed average --run-dir "$run" --last "$avg_last" -o "$run/avg.pt"
    candidates+=(avg.pt)
  else
    echo "   $n_steps step checkpoint(s), AVG_LAST=$avg_last: no averaging"
  fi
  mkdir -p "$run/select"
  rm -f "$run"/select/*.score.json
  local ckpt
  for ckpt in "${candidates[@]}"; do
    seqed translate -c "$run/$ckpt" --beam "$beam" --device "$device" -i "$data/$VALID.en" \
      -o "$run/select/$ckpt.$VALID.hyp.fr"
    seqed score --ref "$data/$VALID.fr" --hyp "$run/select/$ckpt.$VALID.hyp.fr" --json > "$run/select/$ckpt.score.json"
    echo "   $ckpt: $VALID BLEU $("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["bleu"])' \
      "$run/select/$ckpt.score.json")"
  done
  local final
  final=$("$PYTHON" recipes/results.py select "$run"/select/*.score.json)
  echo "   chose $final"

  local alpha best_alpha
  rm -f "$run"/select/lp_*.score.json
  if [ "$beam" -gt 1 ]; then
    echo "   length penalty on $VALID (beam $beam):"
    for alpha in $alphas; do
      seqed translate -c "$run/$final" --beam "$beam" --length-penalty "$alpha" --device "$device" \
        -i "$data/$VALID.en" -o "$run/select/lp_$alpha.$VALID.hyp.fr"
      seqed score --ref "$data/$VALID.fr" --hyp "$run/select/lp_$alpha.$VALID.hyp.fr" --json \
        > "$run/select/lp_$alpha.score.json"
      echo "     alpha $alpha: $VALID BLEU $("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["bleu"])' \
        "$run/select/lp_$alpha.score.json")"
    done
    best_alpha=$("$PYTHON" recipes/results.py select "$run"/select/lp_*.score.json)
    best_alpha=${best_alpha#lp_}
  else
    best_alpha=0
  fi
  echo "   length penalty $best_alpha"

  echo "== [4/5] decoding ${TESTS} with beam $beam (length penalty $best_alpha) and greedy"
  local t start end
  for t in $TESTS; do
    if [ ! -f "$data/$t.en" ]; then
      echo "   no $data/$t.en: skipping $t"
      continue
    fi
    start=$(date +%s.%N)
    seqed translate -c "$run/$final" --beam "$beam" --length-penalty "$best_alpha" --device "$device" \
      -i "$data/$t.en" -o "$run/$t.hyp.fr"
    end=$(date +%s.%N)
    echo "{\"seconds\": $(awk "BEGIN {print $end - $start}")}" > "$run/$t.decode.json"
    seqed score --ref "$data/$t.fr" --hyp "$run/$t.hyp.fr" --json > "$run/$t.score.json"
    seqed translate -c "$run/$final" --beam 1 --device "$device" -i "$data/$t.en" -o "$run/$t.greedy.hyp.fr"
    seqed score --ref "$data/$t.fr" --hyp "$run/$t.greedy.hyp.fr" --json > "$run/$t.greedy.score.json"
  done

  echo "== [5/5] results"
  "$PYTHON" recipes/results.py write --run "$run" --recipe "$RECIPE" --config "$config" --checkpoint "$final" \
    --data "$data" --tests "$TESTS" --beam "$beam" --length-penalty "$best_alpha" --overrides "$*"
}
