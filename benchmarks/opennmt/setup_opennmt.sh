#!/usr/bin/env bash
# Install OpenNMT-py 3.5.1 (and, with --joeynmt, JoeyNMT 2.3.0) next to torch 2.13.0 in their own
# virtual environments under benchmarks/work/ (gitignored), for benchmarks/compare_opennmt.py.
#
#   bash benchmarks/opennmt/setup_opennmt.sh             # OpenNMT-py  -> benchmarks/work/onmt-venv
#   bash benchmarks/opennmt/setup_opennmt.sh --joeynmt   # also JoeyNMT -> benchmarks/work/joey-venv
#
# Facts this script encodes (see issue 5):
# * OpenNMT-py 3.5.1 pins torch<2.3, so it is installed with --no-deps and its requirements are
#   listed by hand (ctranslate2 4.x). It imports every transform at start-up, so spacy and
#   fasttext-wheel are needed even though the benchmark uses none of them.
# * With torch >= 2.6, OpenNMT-py's own checkpoints load only with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
#   (compare_opennmt.py sets it for onmt_translate).
# * JoeyNMT 2.3.0 installs against torch 2.13.0 with its own requirements plus importlib_metadata.
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${SEQED_BENCH_WORK:-$root/benchmarks/work}
python=${PYTHON:-python3}
torch_req=${TORCH_REQ:-torch==2.13.0}   # pip takes the CPU wheel the machine carries
joey=0
for arg in "$@"; do
  case "$arg" in
    --joeynmt) joey=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "setup_opennmt.sh: unknown argument '$arg' (use --joeynmt or --help)" >&2; exit 2 ;;
  esac
done

pip_install() {  # pip_install VENV ARGS...: quiet, without the machine's notes about local index folders
  local venv=$1; shift
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
}

make_venv() {  # make_venv DIR: a venv holding the pinned torch
  if [ ! -x "$1/bin/python" ]; then
    "$python" -m venv "$1"
  fi
  pip_install "$1" "$torch_req"
}

onmt="$work/onmt-venv"
echo "[setup] OpenNMT-py 3.5.1 -> $onmt"
make_venv "$onmt"
pip_install "$onmt" --no-deps "OpenNMT-py==3.5.1"
pip_install "$onmt" numpy configargparse "ctranslate2>=4,<5" tensorboard flask waitress \
  "pyonmttok>=1.37,<2" pyyaml sacrebleu rapidfuzz pyahocorasick six sentencepiece spacy fasttext-wheel
echo "[setup] (a pip note that opennmt-py requires torch<2.3 is expected: it is installed --no-deps on purpose)"
PYTHONWARNINGS=ignore TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$onmt/bin/python" -c \
  "import torch, onmt, onmt.bin.train, onmt.bin.translate; print('[setup] onmt', onmt.__version__, 'torch', torch.__version__)"

if [ "$joey" = 1 ]; then
  joeyv="$work/joey-venv"
  echo "[setup] JoeyNMT 2.3.0 -> $joeyv"
  make_venv "$joeyv"
  pip_install "$joeyv" "joeynmt==2.3.0" importlib_metadata "$torch_req"
  PYTHONWARNINGS=ignore "$joeyv/bin/python" -c \
    "import torch, joeynmt, joeynmt.training; print('[setup] joeynmt', joeynmt.__version__, 'torch', torch.__version__)"
fi
echo "[setup] done"
