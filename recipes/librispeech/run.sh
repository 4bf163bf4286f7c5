#!/usr/bin/env bash
# Usage: bash recipes/librispeech/run.sh [--stage N] [--stop-stage N] [--data-dir DIR] [--mirror URL]
#            [--subsets "a b ..."] [--config FILE] [--exp-dir DIR] [--nproc N] [--device cpu|cuda]
#            [--nnodes N --node-rank R --rdzv-endpoint HOST:PORT] [--avg N] [--best-by last|valid_loss|valid_cer]
#            [--lm-config FILE] [--lm-text FILE] [--lm-weight W] [--decode-nproc N] [--nj N] [--md5sums FILE]
#            [--utterance-counts FILE] [--keep-tarballs true|false]
#
# LAS on LibriSpeech (OpenSLR SLR12), from the download to RESULTS.md:
#   1. download  each subset's tarball from --mirror into --data-dir, unless DATA_DIR/LibriSpeech/SUBSET is
#                there already; broken-off transfers resume over HTTP Range; every file is checked against
#                the published MD5 (md5sums.txt)
#   2. prepare   use DATA_DIR/LibriSpeech/SUBSET in place when it is complete (its .complete marker, or checked:
#                every transcript line has its audio, and the published count of utterances); else extract the
#                tarball into a temporary folder, check it and move it into place. An incomplete folder that
#                was there already is refused, never deleted. Then write EXP_DIR/dump/<subset>.jsonl (audio is
#                read in place); dump/train.jsonl joins the train-* subsets, dump/dev.jsonl the dev-* ones
#   3. features  global CMVN statistics and the token list of dump/train.jsonl
#   4. train     the acoustic model (under torchrun when --nproc or --nnodes > 1), then average the
#                --avg best (--best-by) epoch checkpoints into EXP_DIR/model_avg
#   5. lm        a character LSTM LM with 'asr-s2s train-lm' on the training transcripts, after --lm-text
#                when given (e.g. librispeech-lm-norm.txt), validated on the dev transcripts
#   6. decode    every dev-*/test-* subset with the config's scorers, and again with the LM
#   7. score     EXP_DIR/RESULTS.md: WER and CER per set (ESPnet's style), the config and the command
# Defaults: stages 1-7, --data-dir recipes/librispeech/data, --mirror https://www.openslr.org/resources/12,
# --subsets "train-clean-100 dev-clean dev-other test-clean test-other" (for 960 h add train-clean-360 and
# train-other-500, with --config conf/las_960h.yaml), --config conf/las_100h.yaml, --exp-dir
# recipes/librispeech/exp/<config name>, --nproc 1, --device cuda if torch sees a GPU (else cpu),
# --avg 5 --best-by valid_loss, conf/lm_char.yaml, --lm-weight 0.3, --decode-nproc = --nproc, --nj 8,
# --utterance-counts utterance_counts.txt (the published counts), --keep-tarballs true (false deletes each
# tarball once its subset is extracted, checked and marked: about 60 GB for 960 h).
# Each finished stage (per subset where it applies) leaves a marker recording its inputs, and a re-run skips
# it; a stage cut short restarts cleanly (training resumes from its last checkpoint). When a stage's inputs
# changed (other --subsets, config, CMVN, tokens, model), stages 2, 3, 6 and 7 are redone; training (4) and
# the LM (5), and CMVN/tokens once training started, are refused: use a new --exp-dir.
# --stage N re-runs stage N even if it is marked done.
# Several nodes: run stages 1-3 once, on one node; then stage 4 on every node with --nnodes N --node-rank R
# --rdzv-endpoint HOST:PORT (node 0 averages); stage 5 on one node; stage 6 on every node as stage 4;
# stage 7 on one node. Each torchrun of a stage meets on a port of its own: PORT, PORT+1, ... (stage 6 runs two
# per decoded set with an LM, one without), so keep that range free on node 0.
# With --nnodes > 1 only '--stage 4 --stop-stage 4' or '--stage 6 --stop-stage 6' run.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command_line="bash $(printf '%q ' "${BASH_SOURCE[0]}" "$@")"

stage=1
forced_stage=""  # --stage N re-runs stage N even when it is marked done
stop_stage=7
data_dir="$recipe_dir/data"
mirror="https://www.openslr.org/resources/12"
md5sums="$recipe_dir/md5sums.txt"
utterance_counts="$recipe_dir/utterance_counts.txt"
keep_tarballs=true
subsets="train-clean-100 dev-clean dev-other test-clean test-other"  # 960 h: add train-clean-360 train-other-500
config="$recipe_dir/conf/las_100h.yaml"
exp_dir=""
nproc=1
nnodes=1
node_rank=""
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
die() { echo "run.sh: $1" >&2; exit "${2:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; forced_stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data-dir) mkdir -p "$2"; data_dir=$(cd "$2" && pwd); shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --md5sums) md5sums=$(abspath "$2"); shift 2 ;;
    --utterance-counts) utterance_counts=$(abspath "$2"); shift 2 ;;
    --keep-tarballs) keep_tarballs=$2; shift 2 ;;
    --subsets) subsets=$2; shift 2 ;;
    --config) config=$(abspath "$2"); shift 2 ;;
    --exp-dir) exp_dir=$2; shift 2 ;;
    --nproc) nproc=$2; shift 2 ;;
    --nnodes) nnodes=$2; shift 2 ;;
    --node-rank) node_rank=$2; shift 2 ;;
    --rdzv-endpoint) rdzv_endpoint=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --avg) avg=$2; shift 2 ;;
    --best-by) best_by=$2; shift 2 ;;
    --lm-config) lm_config=$(abspath "$2"); shift 2 ;;
    --lm-text) lm_text=$(abspath "$2"); shift 2 ;;
    --lm-weight) lm_weight=$2; shift 2 ;;
    --decode-nproc) decode_nproc=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    -h|--help) sed -n '2,41p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

command -v asr-s2s >/dev/null || die "asr-s2s not on PATH; run 'bash tools/setup.sh' and activate .venv"
[ -f "$config" ] || die "no config file $config"
case "$keep_tarballs" in true|false) ;; *) die "--keep-tarballs takes true or false, not '$keep_tarballs'" ;; esac
if [ "$nnodes" -gt 1 ]; then  # training and decoding span the nodes; everything else runs once, on one node
  [ -n "$rdzv_endpoint" ] || die "--nnodes $nnodes needs --rdzv-endpoint HOST:PORT (node 0's address and a free port)"
  [[ "$rdzv_endpoint" =~ ^.+:[0-9]+$ ]] || die "--rdzv-endpoint takes HOST:PORT, not '$rdzv_endpoint'"
  [ -n "$node_rank" ] || die "--nnodes $nnodes needs --node-rank R (0 to $((nnodes - 1)); node 0 writes the outputs)"
  { [ "$node_rank" -ge 0 ] && [ "$node_rank" -lt "$nnodes" ]; } 2>/dev/null || die "--node-rank must be 0 to $((nnodes - 1))"
  if [ "$stage" != "$stop_stage" ] || { [ "$stage" != 4 ] && [ "$stage" != 6 ]; }; then
    die "with --nnodes > 1 run '--stage 4 --stop-stage 4' (training) or '--stage 6 --stop-stage 6' (decoding) on every
node; run stages 1-3, 5 and 7 once, on one node, without --nnodes (see --help)"
  fi
fi
node_rank=${node_rank:-0}
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
    *) die "unknown LibriSpeech subset '$s'" ;;
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
[ "$node_rank" = 0 ] && echo "$command_line" > "$exp_dir/run_command.txt"

# digest FILE...: a short hash of the files' contents (a missing file counts as empty), for the inputs a marker records
digest() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }

# run_stage N MARKER DESCRIPTION INPUTS [refuse]: true when stage N must run. MARKER records the INPUTS a
# finished stage was built from, MARKER.inputs those of a stage under way. Recorded inputs other than INPUTS
# redo the stage, or with 'refuse' (work that cannot be mixed: checkpoints) stop the recipe with exit 2.
run_stage() {
  local n=$1 marker=$2 what=$3 inputs=$4 policy=${5:-redo} recorded=""
  [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ] || return 1
  if [ -f "$marker" ]; then recorded=$(cat "$marker"); elif [ -f "$marker.inputs" ]; then recorded=$(cat "$marker.inputs"); fi
  if [ -n "$recorded" ] && [ "$recorded" != "$inputs" ]; then
    [ "$policy" = refuse ] && die "stage $n ($what) in $exp_dir was built from other inputs:
  then: $recorded
  now:  $inputs
Its work cannot be mixed with the new inputs'. Use a new --exp-dir (or remove $(dirname "$marker")'s outputs
and $marker* to start this stage again)."
    echo "== stage $n: $what (its inputs changed: was '$recorded'; redoing)" >&2
  elif [ -f "$marker" ] && [ "$forced_stage" != "$n" ]; then
    echo "== stage $n: $what (done, skipped)" >&2
    return 1
  else
    echo "== stage $n: $what" >&2
  fi
  rm -f "$marker"
  if [ "$node_rank" = 0 ]; then mkdir -p "$(dirname "$marker")"; printf '%s\n' "$inputs" > "$marker.inputs"; fi
  return 0
}
# done_stage MARKER [INPUTS]: the stage finished (INPUTS: what it was built from, known only now)
done_stage() {
  [ "$node_rank" = 0 ] || return 0
  if [ $# -gt 1 ]; then printf '%s\n' "$2" > "$1.inputs"; fi
  mv "$1.inputs" "$1"
}

# launch NPROC COMMAND...: run an asr-s2s command, under torchrun when several processes are asked for
launches=0  # torchrun runs so far: run K of a multi-node stage meets at PORT+K (see below)
launch() {
  local n=$1
  shift
  if [ "$n" -gt 1 ] || [ "$nnodes" -gt 1 ]; then
    local rdzv=(--standalone)
    # Static rendezvous: node 0 holds global rank 0, which writes checkpoints and decoding outputs. Each run
    # of a stage meets on a port of its own (PORT, PORT+1, ...): a node that finished run K first must not
    # join run K+1 at node 0's run-K store, which is about to close (it would wait there for ever).
    [ "$nnodes" -gt 1 ] && rdzv=(--nnodes "$nnodes" --node-rank "$node_rank" --rdzv-backend static
                                 --rdzv-endpoint "${rdzv_endpoint%:*}:$((${rdzv_endpoint##*:} + launches))"
                                 --rdzv-id "$name-$launches")
    launches=$((launches + 1))
    torchrun "${rdzv[@]}" --nproc_per_node "$n" --no-python "$@"
  else
    "$@"
  fi
}

# -- 1. download ------------------------------------------------------------------
# A subset already in DATA_DIR/LibriSpeech is not downloaded: stage 2 uses it (or refuses it, untouched).
# One download per tarball at a time: a second experiment on the same data folder waits for the first.
for s in $subsets; do
  if [ -d "$corpus/$s" ] && [ ! -f "$data_dir/.$s.download.done" ]; then
    [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ] && echo "== stage 1: download $s.tar.gz (found $corpus/$s; skipped)" >&2
    continue
  fi
  if run_stage 1 "$data_dir/.$s.download.done" "download $s.tar.gz from $mirror" "$s.tar.gz"; then
    flock "$data_dir/.$s.download.lock" \
      asr-s2s download --base-url "$mirror" --out-dir "$data_dir" --md5sums "$md5sums" "$s.tar.gz"
    done_stage "$data_dir/.$s.download.done"
  fi
done

# -- 2. extract (or find) and prepare ---------------------------------------------------
# asr-s2s extract --subset never deletes a folder it did not make: see 'asr-s2s extract --help'.
# subset_inputs SUBSET: the folder and its .complete marker (a subset removed or replaced is prepared again)
subset_inputs() { echo "$corpus/$1 (marker $(digest "$corpus/$1/.complete"))"; }
for s in $subsets; do
  expected=()
  count=$(awk -v s="$s" '$2 == s {print $1}' "$utterance_counts" 2>/dev/null || true)
  [ -n "$count" ] && expected=(--expected-utterances "$count")
  if run_stage 2 "$dump/.$s.done" "extract (or find) $s and write its manifest" "$(subset_inputs "$s")"; then
    asr-s2s extract --subset "LibriSpeech/$s" --out-dir "$data_dir" "${expected[@]}" --keep-tarball "$keep_tarballs" \
      --md5sums "$md5sums" --verified-marker "$data_dir/.$s.download.done" "$data_dir/$s.tar.gz" >/dev/null
    asr-s2s prepare --data-dir "$corpus/$s" --out "$dump/$s.jsonl"
    done_stage "$dump/.$s.done" "$(subset_inputs "$s")"
  fi
done
# join SETS... > dump/NAME.jsonl: the training (or dev) manifest of this run's --subsets, when all are prepared
join_manifests() {
  local out=$1
  shift
  [ $# -gt 0 ] || return 0
  for s in "$@"; do [ -f "$dump/.$s.done" ] || return 0; done
  (cd "$dump" && cat "${@/%/.jsonl}" > "$out.tmp" && mv "$out.tmp" "$out")
}
if [ "$node_rank" = 0 ]; then
  join_manifests train.jsonl "${train_sets[@]}"
  join_manifests dev.jsonl "${dev_sets[@]}"
fi

# -- 3. CMVN and tokens -------------------------------------------------------------
train_inputs="train: ${train_sets[*]} (manifest $(digest "$dump/train.jsonl"))"
features_policy=redo
if [ -f "$exp_dir/.train.done" ] || [ -f "$exp_dir/.train.done.inputs" ]; then
  features_policy=refuse  # once training started, its CMVN and tokens stay
fi
if run_stage 3 "$dump/.features.done" "global CMVN and the token list of the training set" "$train_inputs" "$features_policy"; then
  [ ${#train_sets[@]} -gt 0 ] || die "no training subset among: $subsets"
  [ -f "$dump/train.jsonl" ] || die "no dump/train.jsonl for ${train_sets[*]}: run stage 2 for them first"
  asr-s2s compute-cmvn --manifest "$dump/train.jsonl" --out "$dump/cmvn.json" --num-workers "$nj"
  asr-s2s tokens --manifest "$dump/train.jsonl" --out "$dump/tokens.txt"
  done_stage "$dump/.features.done"
fi

# -- 4. train, then average checkpoints ------------------------------------------------
model_inputs="$train_inputs; dev: ${dev_sets[*]}; config $(digest "$config"); cmvn, tokens $(digest "$dump/cmvn.json" "$dump/tokens.txt")"
if run_stage 4 "$exp_dir/.train.done" "train $name on ${train_sets[*]} ($nproc process(es) x $nnodes node(s), $device)" \
     "$model_inputs" refuse; then
  [ -f "$dump/dev.jsonl" ] || die "training needs a dev subset (dev-clean or dev-other)"
  resume=""
  [ -d "$exp_dir/checkpoints" ] && resume="--resume"
  launch "$nproc" asr-s2s train --config "$config" --train-manifest "$dump/train.jsonl" \
    --valid-manifest "$dump/dev.jsonl" --cmvn "$dump/cmvn.json" --tokens "$dump/tokens.txt" \
    --exp-dir "$exp_dir" --device "$device" $resume
  if [ "$node_rank" = 0 ]; then
    have=$(find "$exp_dir/checkpoints" -name 'epoch-*.pt' | wc -l)
    n=$(( avg < have ? avg : have ))
    asr-s2s average --exp-dir "$exp_dir" --avg "$n" --best-by "$best_by" --out "$exp_dir/model_avg"
  fi
  done_stage "$exp_dir/.train.done"
fi

# -- 5. language model ----------------------------------------------------------------
has_lm=false
if asr-s2s train-lm --help >/dev/null 2>&1; then has_lm=true; fi
lm_inputs="config $(digest "$lm_config"); tokens $(digest "$dump/tokens.txt"); $train_inputs; dev: ${dev_sets[*]}; text: ${lm_text:-none}"
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && ! $has_lm; then
  echo "== stage 5: this asr-s2s has no train-lm; no language model (skipped)" >&2
elif run_stage 5 "$lm_dir/.done" "train the character LM ($lm_dir)" "$lm_inputs" refuse; then
  mkdir -p "$lm_dir"
  asr-s2s lm-text --manifest "$dump/train.jsonl" --out "$lm_dir/train_text.txt"
  valid=()
  if [ -f "$dump/dev.jsonl" ]; then
    asr-s2s lm-text --manifest "$dump/dev.jsonl" --out "$lm_dir/dev_text.txt"
    valid=(--valid-text "$lm_dir/dev_text.txt")
  fi
  resume=""
  [ -f "$lm_dir/checkpoint.pt" ] && resume="--resume"
  asr-s2s train-lm --text ${lm_text:+"$lm_text"} "$lm_dir/train_text.txt" "${valid[@]}" --config "$lm_config" \
    --tokens "$dump/tokens.txt" --exp-dir "$lm_dir" --device "$device" $resume
  done_stage "$lm_dir/.done"
fi

# -- 6. decode ------------------------------------------------------------------------
# decode SET TAG [evaluate options...]: EXP_DIR/decode_SET_TAG/ and decode_SET_TAG.json (node 0 writes both)
decode() {
  local set=$1 tag=$2
  shift 2
  launch "$decode_nproc" asr-s2s evaluate --model "$exp_dir/model_avg" --manifest "$dump/$set.jsonl" \
    --output-dir "$exp_dir/decode_${set}_$tag" --device "$device" --num-workers "$nj" --json --quiet "$@" >/dev/null
  if [ "$node_rank" = 0 ]; then
    cp "$exp_dir/decode_${set}_$tag/results.json" "$exp_dir/decode_${set}_$tag.json.tmp"
    mv "$exp_dir/decode_${set}_$tag.json.tmp" "$exp_dir/decode_${set}_$tag.json"
  fi
}
for s in "${decode_sets[@]}"; do
  decode_inputs="model $(digest "$exp_dir/model_avg/model.safetensors"); $s $(digest "$dump/$s.jsonl")"
  [ -d "$lm_dir/lm" ] && decode_inputs+="; lm $(digest "$lm_dir/lm/model.safetensors") x $lm_weight"
  if run_stage 6 "$exp_dir/.decode_$s.done" "decode $s" "$decode_inputs"; then
    decode "$s" beam
    if [ -d "$lm_dir/lm" ]; then
      decode "$s" beam_lm --lm "$lm_dir/lm" --scorer lm="$lm_weight"
    fi
    done_stage "$exp_dir/.decode_$s.done"
  fi
done

# -- 7. score -------------------------------------------------------------------------
results_inputs="sets: ${decode_sets[*]}; decodes $(cd "$exp_dir" && digest decode_*.json)"
if run_stage 7 "$exp_dir/.results.done" "write $exp_dir/RESULTS.md" "$results_inputs"; then
  asr-s2s results show-asr-result "$exp_dir" --config "$config" --command "$command_line" \
    --lm-weight "$lm_weight" --sets "${decode_sets[*]}"
  done_stage "$exp_dir/.results.done"
fi
