#!/usr/bin/env bash
# Sequence autoencoders on the English side of Multi30k, one command: train a config, then measure
# reconstruction of test2016.en with `seqed evaluate` (JSON into the run directory) and write the codes
# of the test sentences (for plots.py).
#
#   bash recipes/autoencoder/run.sh [CONFIG] [key.path=value ...]
#     CONFIG: rnn_code (default), rnn_code_tied, attention, mixed, denoising, variational, masked
#
#   SEQED_DATA=../shared/data bash recipes/autoencoder/run.sh rnn_code   # local copy, no network
#   bash recipes/autoencoder/run.sh attention                            # downloads Multi30k first
#   RUN=runs/ae_quick bash recipes/autoencoder/run.sh rnn_code train.max_minutes=2
#   GPU=1 bash recipes/autoencoder/run.sh attention                      # one GPU, 5 minutes
#
# Environment (all optional): SEQED_DATA (a directory holding multi30k/{train,val,test2016}.en; unset:
# download into PREPARED, default runs/data), RUN (default runs/ae_CONFIG, or runs/ae_CONFIG_gpu with GPU=1),
# BEAM (default 1: greedy), DEVICE (auto | cpu | cuda), GPU (1: train with the settings of
# recipes/autoencoder/gpu.overrides, given before the command line's overrides).
# Writes into RUN: results.json (summary.py: what the README's table shows), test2016.eval.json (clean
# input; not for `masked`), test2016.mask15.eval.json (denoising and masked: 15% of the pieces masked,
# with completion_accuracy; free decoding for denoising, --fill for masked), test2016.mask15.fill.eval.json
# (denoising: the same input with --fill, i.e. visible pieces kept and only the masked ones predicted),
# test2016.codes.npy, and what training writes (train.log.jsonl, checkpoints, config.yaml).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}

config=rnn_code
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then config=$1; shift; fi
yaml=recipes/autoencoder/$config.yaml
if [ ! -f "$yaml" ]; then
  echo "run.sh: no config $yaml; choose one of:" $(cd recipes/autoencoder && ls -- *.yaml | sed 's/\.yaml$//') >&2
  exit 2
fi
BEAM=${BEAM:-1}
DEVICE=${DEVICE:-auto}
if [ "${GPU:-0}" = 1 ]; then
  # gpu.overrides: `key=value` lines for every config, `CONFIG: key=value ...` lines for one; `#` comments
  gpu=()
  while read -r line; do
    line=${line%%#*}
    case $line in
      "$config:"*) read -ra words <<< "${line#*:}"; gpu+=("${words[@]}") ;;
      *:*) ;;
      *=*) read -ra words <<< "$line"; gpu+=("${words[@]}") ;;
    esac
  done < recipes/autoencoder/gpu.overrides
  set -- "${gpu[@]}" "$@"
  RUN=${RUN:-runs/ae_${config}_gpu}
fi
RUN=${RUN:-runs/ae_$config}

echo "== [1/4] data"
if [ -n "${SEQED_DATA:-}" ] && [ -f "$SEQED_DATA/multi30k/train.en" ]; then
  echo "   using $SEQED_DATA/multi30k"
else
  PREPARED=${PREPARED:-runs/data}
  if [ ! -f "$PREPARED/multi30k/prepare.json" ]; then
    seqed prepare multi30k --out "$PREPARED/multi30k"
  fi
  SEQED_DATA=$PREPARED
fi
export SEQED_DATA
test_en=$SEQED_DATA/multi30k/test2016.en

echo "== [2/4] training $yaml into $RUN"
mkdir -p "$RUN"
if [ -f "$RUN/train.done" ]; then
  echo "   $RUN/train.done exists: not training again (delete it, or choose another RUN=...)"
elif [ -f "$RUN/checkpoint_last.pt" ]; then
  seqed train "$yaml" out_dir="$RUN" "$@" --resume
else
  seqed train "$yaml" out_dir="$RUN" "$@"
fi
touch "$RUN/train.done"

# Models trained on clean reconstruction are selected on validation BLEU; noise-trained models
# (validated on clean input, or not at all) and the VAE (its KL weight still rising early on) use the last.
case $config in
  rnn_code|rnn_code_tied|attention|mixed) ckpt=$RUN/checkpoint_best.pt ;;
  *) ckpt=$RUN/checkpoint_last.pt ;;
esac

echo "== [3/4] evaluating $ckpt on $test_en (beam $BEAM)"
if [ "$config" != masked ]; then
  seqed evaluate -c "$ckpt" -i "$test_en" --beam "$BEAM" --device "$DEVICE" \
    --json "$RUN/test2016.eval.json" > /dev/null
fi
case $config in
  denoising) seqed evaluate -c "$ckpt" -i "$test_en" --beam "$BEAM" --device "$DEVICE" --noise mask=0.15 \
               --json "$RUN/test2016.mask15.eval.json" > /dev/null
             seqed evaluate -c "$ckpt" -i "$test_en" --device "$DEVICE" --noise mask=0.15 --fill \
               --json "$RUN/test2016.mask15.fill.eval.json" > /dev/null ;;
  masked) seqed evaluate -c "$ckpt" -i "$test_en" --device "$DEVICE" --noise mask=0.15 --fill \
            --json "$RUN/test2016.mask15.eval.json" > /dev/null ;;
esac

echo "== [4/4] codes of the test sentences"
seqed encode -c "$ckpt" -i "$test_en" -o "$RUN/test2016.codes.npy" --device "$DEVICE"

"$PYTHON" recipes/autoencoder/summary.py write "$RUN" --config "$config" --checkpoint "$ckpt"
"$PYTHON" - "$RUN" <<'PY'
import json, pathlib, sys
r = json.loads((pathlib.Path(sys.argv[1]) / "results.json").read_text())
for key, ev in r["evaluations"].items():
    line = (f"   {key}: BLEU {ev['bleu']}  chrF {ev['chrf']}  exact match {ev['exact_match']}%  "
            f"token accuracy {ev['token_accuracy']}%")
    if ev.get("completion_accuracy") is not None:
        line += f"  completion accuracy {ev['completion_accuracy']}% of {ev['masked_tokens']} masked pieces"
    if "variational" in ev:
        v = ev["variational"]
        line += f"  KL {v['kl']:.2f}  NLL {v['nll']:.2f}  active units {v['active_units']}/{v['latent_dim']}"
    print(line)
t = r["training"]
print(f"   trained {t['steps']} updates in {t['minutes']} min on {r['hardware']['torch_threads']} thread(s); "
      f"{r['model']['params']:,} parameters")
PY
