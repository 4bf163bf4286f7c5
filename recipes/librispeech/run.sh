#!/usr/bin/env bash
# Usage: bash recipes/librispeech/run.sh [--stage N] [--stop-stage N] [--data-dir DIR] [--mirror URL]
#            [--subsets "a b ..."] [--config FILE] [--exp-dir DIR] [--nproc N] [--device cpu|cuda]
#            [--nnodes N --rdzv-endpoint HOST:PORT] [--avg N] [--best-by last|valid_loss|valid_cer]
#            [--lm-config FILE] [--lm-text FILE] [--lm-weight W] [--decode-nproc N] [--nj N] [--md5sums FILE]
#
# LAS on LibriSpeech (OpenSLR SLR12), from the download to RESULTS.md:
#   1. download  each subset's tarball from --mirror into --data-dir; broken-off transfers resume
#                over HTTP Range; every file is checked against the published MD5 (md5sums.txt)
#   2. prepare   extract each tarball and write EXP_DIR/dump/<subset>.jsonl (audio is read in place,
#                never copied); dump/train.jsonl joins the train-* subsets, dump/dev.jsonl the dev-* ones
#   3. features  global CMVN statistics and the token list of dump/train.jsonl
#   4. train     the acoustic model (under torchrun when --nproc or --nnodes > 1), then average the
#                --avg best (--best-by) epoch checkpoints into EXP_DIR/model_avg
#   5. lm        a character LSTM LM with 'asr-s2s train-lm' on --lm-text (default: the training
#                transcripts); skipped if this asr-s2s has no train-lm
#   6. decode    every dev-*/test-* subset with the config's scorers, and again with the LM
#   7. score     EXP_DIR/RESULTS.md: WER and CER per set (ESPnet's style), the config and the command
# Defaults: stages 1-7, --data-dir recipes/librispeech/data, --mirror https://www.openslr.org/resources/12,
# --subsets "train-clean-100 dev-clean dev-other test-clean test-other" (for 960 h add train-clean-360 and
# train-other-500, with --config conf/las_960h.yaml), --config conf/las_100h.yaml, --exp-dir
# recipes/librispeech/exp/<config name>, --nproc 1, --device cuda if torch sees a GPU (else cpu),
# --avg 5 --best-by valid_loss, conf/lm_char.yaml, --lm-weight 0.3, --decode-nproc = --nproc, --nj 8.
# Each finished stage (per subset where it applies) leaves a .done marker and a re-run skips it;
# a stage cut short has no marker and restarts cleanly (training resumes from its last checkpoint).
# --stage N re-runs stage N even if it is marked done.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command_line="bash $(printf '%q ' "${BASH_SOURCE[0]}" "$@")"

stage=1
forced_stage=""  # --stage N re-runs stage N even when it is marked done
stop_stage=7
data_dir="$recipe_dir/data"
mirror="https://www.openslr.org/resources/12"
md5sums="$recipe_dir/md5sums.txt"
subsets="train-clean-100 dev-clean dev-other test-clean test-other"  # 960 h: add train-clean-360 train-other-500
config="$recipe_dir/conf/las_100h.yaml"
exp_dir=""
nproc=1
nnodes=1
rdzv_endpoint=""
device=""
avg=5
best_by=valid_loss
lm_config="$recipe_dir/conf/lm_char.yaml"
lm_text=""
lm_weight=0.3
decode_nproc=""
nj=8

abspath() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; forced_stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data-dir) mkdir -p "$2"; data_dir=$(cd "$2" && pwd); shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --md5sums) md5sums=$(abspath "$2"); shift 2 ;;
    --subsets) subsets=$2; shift 2 ;;
    --config) config=$(abspath "$2"); shift 2 ;;
    --exp-dir) exp_dir=$2; shift 2 ;;
    --nproc) nproc=$2; shift 2 ;;
    --nnodes) nnodes=$2; shift 2 ;;
    --rdzv-endpoint) rdzv_endpoint=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --avg) avg=$2; shift 2 ;;
    --best-by) best_by=$2; shift 2 ;;
    --lm-config) lm_config=$(abspath "$2"); shift 2 ;;
    --lm-text) lm_text=$(abspath "$2"); shift 2 ;;
    --lm-weight) lm_weight=$2; shift 2 ;;
    --decode-nproc) decode_nproc=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v asr-s2s >/dev/null || { echo "run.sh: asr-s2s not on PATH; run 'bash tools/setup.sh' and activate .venv" >&2; exit 2; }
[ -f "$config" ] || { echo "run.sh: no config file $config" >&2; exit 2; }
if [ -z "$device" ]; then
  device=$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
fi
decode_nproc=${decode_nproc:-$nproc}

train_sets=() dev_sets=() decode_sets=()
for s in $subsets; do
  case "$s" in
    train-clean-100|train-clean-360|train-other-500) train_sets+=("$s") ;;
    dev-clean|dev-other) dev_sets+=("$s"); decode_sets+=("$s") ;;
    test-clean|test-other) decode_sets+=("$s") ;;
    *) echo "run.sh: unknown LibriSpeech subset '$s'" >&2; exit 2 ;;
  esac
done

name=$(basename "$config" .yaml)
exp_dir=${exp_dir:-"$recipe_dir/exp/$name"}
mkdir -p "$exp_dir"
exp_dir=$(cd "$exp_dir" && pwd)
dump="$exp_dir/dump"  # manifests, CMVN and tokens of this experiment's subsets
mkdir -p "$dump"
corpus="$data_dir/LibriSpeech"
lm_dir="$exp_dir/lm_train"
echo "$command_line" > "$exp_dir/run_command.txt"

run_stage() {  # run_stage N MARKER DESCRIPTION: true when stage N must run (and clears its marker)
  local n=$1 marker=$2
  [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ] || return 1
  if [ -f "$marker" ] && [ "$forced_stage" != "$n" ]; then echo "== stage $n: $3 (done, skipped)" >&2; return 1; fi
  echo "== stage $n: $3" >&2
  rm -f "$marker"
}

# launch NPROC COMMAND...: run an asr-s2s command, under torchrun when several processes are asked for
launch() {
  local n=$1
  shift
  if [ "$n" -gt 1 ] || [ "$nnodes" -gt 1 ]; then
    local rdzv=(--standalone)
    [ "$nnodes" -gt 1 ] && rdzv=(--nnodes "$nnodes" --rdzv-backend c10d --rdzv-endpoint "$rdzv_endpoint" --rdzv-id "$name")
    torchrun "${rdzv[@]}" --nproc_per_node "$n" --no-python "$@"
  else
    "$@"
  fi
}

# -- 1. download ------------------------------------------------------------------
for s in $subsets; do
  if run_stage 1 "$data_dir/.$s.download.done" "download $s.tar.gz from $mirror"; then
    asr-s2s download --base-url "$mirror" --out-dir "$data_dir" --md5sums "$md5sums" "$s.tar.gz"
    touch "$data_dir/.$s.download.done"
  fi
done

# -- 2. extract and prepare -----------------------------------------------------------
# A tarball newer than its stage-2 marker changed since it was extracted: extract it again. asr-s2s extract
# checks its MD5 first unless the download marker is newer, and never applies the archive's owners or modes.
for s in $subsets; do
  tarball="$data_dir/$s.tar.gz"
  if [ -f "$dump/.$s.done" ] && [ "$tarball" -nt "$dump/.$s.done" ]; then rm -f "$dump/.$s.done"; fi
  if run_stage 2 "$dump/.$s.done" "extract $s and write its manifest"; then
    rm -rf "${corpus:?}/$s"  # a cut-short extraction starts over
    asr-s2s extract --md5sums "$md5sums" --verified-marker "$data_dir/.$s.download.done" --out-dir "$data_dir" \
      "$tarball" >/dev/null
    [ -d "$corpus/$s" ] || { echo "run.sh: $s.tar.gz holds no LibriSpeech/$s folder" >&2; exit 1; }
    asr-s2s prepare --data-dir "$corpus/$s" --out "$dump/$s.jsonl"
    touch "$dump/.$s.done"
  fi
done
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  [ ${#train_sets[@]} -gt 0 ] && (cd "$dump" && cat "${train_sets[@]/%/.jsonl}" > train.jsonl.tmp && mv train.jsonl.tmp train.jsonl)
  [ ${#dev_sets[@]} -gt 0 ] && (cd "$dump" && cat "${dev_sets[@]/%/.jsonl}" > dev.jsonl.tmp && mv dev.jsonl.tmp dev.jsonl)
fi

# -- 3. CMVN and tokens -------------------------------------------------------------
if run_stage 3 "$dump/.features.done" "global CMVN and the token list of the training set"; then
  [ -f "$dump/train.jsonl" ] || { echo "run.sh: no training subset among: $subsets" >&2; exit 2; }
  asr-s2s compute-cmvn --manifest "$dump/train.jsonl" --out "$dump/cmvn.json" --num-workers "$nj"
  asr-s2s tokens --manifest "$dump/train.jsonl" --out "$dump/tokens.txt"
  touch "$dump/.features.done"
fi

# -- 4. train, then average checkpoints ------------------------------------------------
if run_stage 4 "$exp_dir/.train.done" "train $name on ${train_sets[*]} ($nproc process(es) x $nnodes node(s), $device)"; then
  [ -f "$dump/dev.jsonl" ] || { echo "run.sh: training needs a dev subset (dev-clean or dev-other)" >&2; exit 2; }
  resume=""
  [ -d "$exp_dir/checkpoints" ] && resume="--resume"
  launch "$nproc" asr-s2s train --config "$config" --train-manifest "$dump/train.jsonl" \
    --valid-manifest "$dump/dev.jsonl" --cmvn "$dump/cmvn.json" --tokens "$dump/tokens.txt" \
    --exp-dir "$exp_dir" --device "$device" $resume
  have=$(find "$exp_dir/checkpoints" -name 'epoch-*.pt' | wc -l)
  n=$(( avg < have ? avg : have ))
  asr-s2s average --exp-dir "$exp_dir" --avg "$n" --best-by "$best_by" --out "$exp_dir/model_avg"
  touch "$exp_dir/.train.done"
fi

# -- 5. language model ----------------------------------------------------------------
has_lm=false
if asr-s2s train-lm --help >/dev/null 2>&1; then has_lm=true; fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && ! $has_lm; then
  echo "== stage 5: this asr-s2s has no train-lm; no language model (skipped)" >&2
elif run_stage 5 "$lm_dir/.done" "train the character LM ($lm_dir)"; then
  text=$lm_text
  if [ -z "$text" ]; then
    text="$dump/train_text.txt"
    asr-s2s lm-text --manifest "$dump/train.jsonl" --out "$text"
  fi
  resume=""
  [ -f "$lm_dir/checkpoint.pt" ] && resume="--resume"
  asr-s2s train-lm --text "$text" --config "$lm_config" --tokens "$dump/tokens.txt" --exp-dir "$lm_dir" \
    --device "$device" $resume
  touch "$lm_dir/.done"
fi

# -- 6. decode ------------------------------------------------------------------------
# decode SET TAG [evaluate options...]: EXP_DIR/decode_SET_TAG/ and decode_SET_TAG.json
decode() {
  local set=$1 tag=$2
  shift 2
  launch "$decode_nproc" asr-s2s evaluate --model "$exp_dir/model_avg" --manifest "$dump/$set.jsonl" \
    --output-dir "$exp_dir/decode_${set}_$tag" --device "$device" --num-workers "$nj" \
    --json --quiet "$@" > "$exp_dir/decode_${set}_$tag.json.tmp"
  mv "$exp_dir/decode_${set}_$tag.json.tmp" "$exp_dir/decode_${set}_$tag.json"
}
for s in "${decode_sets[@]}"; do
  if run_stage 6 "$exp_dir/.decode_$s.done" "decode $s"; then
    decode "$s" beam
    if [ -d "$lm_dir/lm" ]; then
      decode "$s" beam_lm --lm "$lm_dir/lm" --scorer lm="$lm_weight"
    fi
    touch "$exp_dir/.decode_$s.done"
  fi
done

# -- 7. score -------------------------------------------------------------------------
if run_stage 7 "$exp_dir/.results.done" "write $exp_dir/RESULTS.md"; then
  asr-s2s results show-asr-result "$exp_dir" --config "$config" --command "$command_line" \
    --lm-weight "$lm_weight" --sets "${decode_sets[*]}"
  touch "$exp_dir/.results.done"
fi
