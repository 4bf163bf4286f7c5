#!/usr/bin/env bash
# Usage: bash recipes/mini_librispeech/run.sh [--preset default|long] [--stage N] [--stop-stage N] [--hours H]
#                                            [--epochs E] [--config FILE] [--lm-config FILE] [--exp-dir DIR] [--seed S]
#                                            [--ctc-weights "0.3"] [--lm-weights "0.2 0.4"] [--ngram-weights "0.8"]
#                                            [--ngram-order 3] [--sweep-utts 100] [--valid-utts 200]
#                                            [--init-decoder-from-lm true|false] [--device cpu|cuda]
#
# The bundled corpus, end to end, from any working directory:
#   0. synthesise the corpus with espeak-ng, flite and festival (LibriSpeech layout) into corpus/; festival is
#      held out of training: it speaks the dev/test sentences of dev_unseen_tts and test_unseen_tts
#   1. write JSON-lines manifests for every split into dump/
#   2. build the test conditions from the test split (asr-s2s augment, conf/conditions/*.yaml): tight (cut at the
#      speech), noisy (10 dB), reverb, codec (16 kbit/s MP3), and lead0/lead0.15/lead0.5 for the framing check
#      (the first 200 test utterances)
#   3. compute global CMVN statistics on train
#   4. train a character LSTM language model on the corpus's lm-text.txt; package in exp/lm_<lm-config>_seed_<S>/lm
#   5. train the acoustic model with the config's train.augment chain (validating on the first --valid-utts dev
#      utterances each epoch), its decoder started from the stage-4 LM (unless --init-decoder-from-lm false);
#      the model package lands in exp/<name>/model
#   6. estimate a word n-gram LM (IRSTLM, modified shift-beta smoothing) on lm-text.txt and
#      lm-glosses.txt: exp/word_<order>gram_seed_<S>/lm.arpa, for the look-ahead 'ngram' scorer
#   7. sweep the ctc, lm and ngram weights (beam 10) on the first --sweep-utts dev utterances
#   8. evaluate test greedy, and with beam 10 alone, +ctc, +lm, +ctc+lm and +ctc(+lm)+ngram at the
#      best swept weights; print a WER/CER table (exp/<name>/RESULTS.md)
#   9. evaluate every test condition and the unseen synthesiser (test_unseen_tts), greedy and with the best
#      weights, and the framing check (the same files with 0, 0.15 and 0.5 s of leading silence); add both tables
#      to RESULTS.md
#  10. transcribe one test file with the trained model, both LMs and the best weights
# --preset long: 9 h of training speech and 6 epochs (conf/las_mini_long.yaml; see README.md); the other
# options still override it. Each finished stage leaves a .done marker; a re-run skips it unless an earlier
# stage ran again. --stage N redoes stage N and every later one (to --stop-stage).
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$recipe_dir/../.." && pwd)

stage=0
stage_given=false
stop_stage=10
preset=default
hours=""
epochs=""
seed=0
config=""
lm_config="$recipe_dir/conf/lm_char.yaml"
exp_dir=""
ctc_weights="0.3"   # swept together with 0; more values cost a dev decode each (see README)
lm_weights="0.2 0.4"
ngram_weights="0.8"  # swept with 0 (and only with ctc): each costs a dev decode per lm weight
ngram_order=3
sweep_utts=100
valid_utts=200
framing_utts=200  # test utterances in the framing check
init_decoder_from_lm=true   # the LM config's sizes must then match model.decoder's
device=cpu  # training, LM training and decoding (cuda: one GPU)

while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset=$2; shift 2 ;;
    --stage) stage=$2; stage_given=true; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --hours) hours=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --config) config=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --lm-config) lm_config=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --ctc-weights) ctc_weights=$2; shift 2 ;;
    --lm-weights) lm_weights=$2; shift 2 ;;
    --ngram-weights) ngram_weights=$2; shift 2 ;;
    --ngram-order) ngram_order=$2; shift 2 ;;
    --sweep-utts) sweep_utts=$2; shift 2 ;;
    --valid-utts) valid_utts=$2; shift 2 ;;
    --exp-dir) exp_dir=$2; shift 2 ;;
    --init-decoder-from-lm) init_decoder_from_lm=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$preset" in  # what each preset trains; --hours, --epochs and --config override it
  default) hours=${hours:-4.5}; config=${config:-"$recipe_dir/conf/las_mini.yaml"} ;;
  long) hours=${hours:-9}; config=${config:-"$recipe_dir/conf/las_mini_long.yaml"} ;;
  *) echo "run.sh: --preset must be default or long, got '$preset'" >&2; exit 2 ;;
esac
case "$init_decoder_from_lm" in
  true|false) ;;
  *) echo "run.sh: --init-decoder-from-lm must be true or false, got '$init_decoder_from_lm'" >&2; exit 2 ;;
esac
command -v asr-s2s >/dev/null || { echo "run.sh: asr-s2s not on PATH; run 'bash tools/setup.sh' and activate .venv" >&2; exit 2; }
if [ "$stop_stage" -ge 6 ] && ! command -v irstlm >/dev/null; then
  echo "run.sh: irstlm (the word n-gram estimator) is missing; run 'bash tools/setup.sh'" >&2; exit 2
fi

corpus="$recipe_dir/corpus/hours_${hours}_seed_${seed}"
dump="$recipe_dir/dump/hours_${hours}_seed_${seed}"
name=$(basename "$config" .yaml)
no_lm_start=""
[ "$init_decoder_from_lm" = false ] && no_lm_start="_no_lm_start"
exp_dir=${exp_dir:-"$recipe_dir/exp/${name}_${hours}h${epochs:+_${epochs}ep}${no_lm_start}"}
lm_dir="$recipe_dir/exp/$(basename "$lm_config" .yaml)_seed_${seed}"
ngram_dir="$recipe_dir/exp/word_${ngram_order}gram_seed_${seed}"
mkdir -p "$dump" "$exp_dir"

redo=$stage_given  # once a stage runs, every later one runs too: its inputs may have changed
run_stage() {  # run_stage N MARKER DESCRIPTION: true when stage N must run
  local n=$1 marker=$2
  [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ] || return 1
  if [ -f "$marker" ] && [ "$redo" = false ]; then echo "== stage $n: $3 (done, skipped)" >&2; return 1; fi
  echo "== stage $n: $3" >&2
  redo=true
  rm -f "$marker"
}

if run_stage 0 "$corpus/.done" "synthesise the corpus ($hours h of training speech)"; then
  python "$repo_root/data/make_mini_librispeech.py" --out "$corpus" --hours "$hours" --seed "$seed"
  touch "$corpus/.done"
fi

splits=(train dev test)
for split in dev_unseen_tts test_unseen_tts; do [ -d "$corpus/$split" ] && splits+=("$split"); done
if run_stage 1 "$dump/.manifests.done" "manifests (${splits[*]})"; then
  for split in "${splits[@]}"; do
    asr-s2s prepare --data-dir "$corpus/$split" --out "$dump/$split.jsonl"
  done
  touch "$dump/.manifests.done"
fi

conditions=(tight noisy reverb codec)
framing=(lead0 lead0.15 lead0.5)
if run_stage 2 "$dump/.conditions.done" "test conditions (${conditions[*]} ${framing[*]})"; then
  head -n "$framing_utts" "$dump/test.jsonl" > "$dump/test_head.jsonl"
  for condition in "${conditions[@]}" "${framing[@]}"; do  # the same test files, each through one condition
    source="$dump/test.jsonl"
    [[ "$condition" = lead* ]] && source="$dump/test_head.jsonl"  # the framing check uses the first utterances
    rm -rf "$dump/test_$condition"
    asr-s2s augment --manifest "$source" --augment "$recipe_dir/conf/conditions/$condition.yaml" \
      --out-dir "$dump/test_$condition" --seed "$((seed + 1))" --num-workers 2
  done
  touch "$dump/.conditions.done"
fi

if run_stage 3 "$dump/.cmvn.done" "global CMVN"; then
  asr-s2s compute-cmvn --manifest "$dump/train.jsonl" --out "$dump/cmvn.json" --num-workers 0
  touch "$dump/.cmvn.done"
fi

if run_stage 4 "$lm_dir/.train.done" "train the language model ($lm_dir)"; then
  resume=""
  [ -f "$lm_dir/checkpoint.pt" ] && resume="--resume"
  asr-s2s train-lm --text "$corpus/lm-text.txt" --config "$lm_config" --exp-dir "$lm_dir" --device "$device" $resume
  touch "$lm_dir/.train.done"
fi

if run_stage 5 "$exp_dir/.train.done" "train ($exp_dir)"; then
  resume=""
  [ -d "$exp_dir/checkpoints" ] && resume="--resume"
  decoder_start=()
  [ "$init_decoder_from_lm" = true ] && decoder_start=(--init-decoder-from-lm "$lm_dir/lm")
  head -n "$valid_utts" "$dump/dev.jsonl" > "$exp_dir/valid.jsonl"
  asr-s2s train --config "$config" --train-manifest "$dump/train.jsonl" --valid-manifest "$exp_dir/valid.jsonl" \
    --cmvn "$dump/cmvn.json" --exp-dir "$exp_dir" ${epochs:+--epochs "$epochs"} "${decoder_start[@]}" \
    --device "$device" $resume
  touch "$exp_dir/.train.done"
fi

if run_stage 6 "$ngram_dir/.done" "word ${ngram_order}-gram LM ($ngram_dir)"; then
  mkdir -p "$ngram_dir"
  if [ ! -f "$corpus/lm-glosses.txt" ]; then  # a corpus built before the file existed: the builder adds it
    python "$repo_root/data/make_mini_librispeech.py" --out "$corpus" --hours "$hours" --seed "$seed"
  fi
  # IRSTLM reads sentences wrapped in <s> ... </s>; msb: modified shift-beta (Kneser-Ney-like) smoothing,
  # singleton n-grams above unigrams pruned (its default)
  sed 's|^|<s> |; s|$| </s>|' "$corpus/lm-text.txt" "$corpus/lm-glosses.txt" > "$ngram_dir/text.txt"
  irstlm tlm -tr="$ngram_dir/text.txt" -n="$ngram_order" -lm=msb -bo=yes -o="$ngram_dir/lm.arpa.tmp" > "$ngram_dir/tlm.log" 2>&1 ||
    { cat "$ngram_dir/tlm.log" >&2; exit 1; }
  mv "$ngram_dir/lm.arpa.tmp" "$ngram_dir/lm.arpa"  # a decode of another experiment never reads half a file
  rm "$ngram_dir/text.txt"
  touch "$ngram_dir/.done"
fi

# evaluate NAME MANIFEST [evaluate options...]: decode into $exp_dir/decode_NAME{,.json}
evaluate() {
  local name=$1 manifest=$2
  shift 2
  asr-s2s evaluate --model "$exp_dir/model" --manifest "$manifest" --output-dir "$exp_dir/decode_$name" \
    --device "$device" --json --quiet "$@" > "$exp_dir/decode_$name.json"
}
# use_lms CTC LM NGRAM: set lm_options to the evaluate/transcribe options for these weights (the
# ngram scorer's other params, word level with look-ahead, come from the model's decode config)
use_lms() {
  lm_options=(--lm "$lm_dir/lm" --scorer ctc="$1" --scorer lm="$2" --scorer ngram="$3"
              --scorer-param ngram.path="$ngram_dir/lm.arpa")
}

if run_stage 7 "$exp_dir/.sweep.done" "sweep ctc, lm and ngram weights on $sweep_utts dev utterances"; then
  rm -rf "$exp_dir"/decode_sweep_*  # stage 8 picks the best of what this sweep leaves
  head -n "$sweep_utts" "$dump/dev.jsonl" > "$exp_dir/sweep_dev.jsonl"
  for ctc in 0 $ctc_weights; do
    for lm in 0 $lm_weights; do
      for ngram in 0 $ngram_weights; do
        [ "$ctc" = 0 ] && [ "$ngram" != 0 ] && continue  # the word LM is swept on top of ctc only
        name="sweep_ctc${ctc}_lm${lm}_ngram${ngram}"
        use_lms "$ctc" "$lm" "$ngram"
        evaluate "$name" "$exp_dir/sweep_dev.jsonl" "${lm_options[@]}"
        echo "ctc $ctc, lm $lm, ngram $ngram: $(cat "$exp_dir/decode_$name.json")" >&2
      done
    done
  done
  touch "$exp_dir/.sweep.done"
fi

# the best swept weights (lowest dev WER + CER) for ctc alone, lm alone, ctc + lm, and ctc + lm + ngram
best() {  # best ctc|lm|both|all -> "CTC LM NGRAM"
  asr-s2s results best-weights "$exp_dir" --kind "$1"
}

if run_stage 8 "$exp_dir/.decode.done" "evaluate test"; then
  evaluate test_greedy "$dump/test.jsonl" --beam-size 1 --scorer length_bonus=0 --scorer coverage=0
  evaluate test_beam "$dump/test.jsonl"  # the model's decode config (decode: in the YAML)
  for which in ctc lm both all; do
    weights=$(best $which)  # a failing 'best' ends the script here; inside 'read <<<' it would not
    read -r ctc lm ngram <<< "$weights"
    use_lms "$ctc" "$lm" "$ngram"
    evaluate "test_beam_${which}" "$dump/test.jsonl" "${lm_options[@]}"
    echo "$ctc $lm $ngram" > "$exp_dir/decode_test_beam_${which}.weights"
  done
  asr-s2s results test-table "$exp_dir"  # writes results_test.md
  cat "$exp_dir"/results_{test,conditions}.md > "$exp_dir/RESULTS.md" 2>/dev/null || true
  touch "$exp_dir/.decode.done"
fi

if run_stage 9 "$exp_dir/.conditions.done" "evaluate the test conditions and the unseen synthesiser"; then
  weights=$(best all)
  read -r ctc lm ngram <<< "$weights"
  use_lms "$ctc" "$lm" "$ngram"
  sets=("${conditions[@]}")
  [ -f "$dump/test_unseen_tts.jsonl" ] && sets+=(unseen_tts)
  for set in "${sets[@]}"; do
    manifest="$dump/test_$set/manifest.jsonl"
    [ "$set" = unseen_tts ] && manifest="$dump/test_unseen_tts.jsonl"
    evaluate "cond_${set}_greedy" "$manifest" --beam-size 1 --scorer length_bonus=0 --scorer coverage=0
    evaluate "cond_${set}_best" "$manifest" "${lm_options[@]}"
  done
  for set in "${framing[@]}"; do
    evaluate "cond_${set}_best" "$dump/test_$set/manifest.jsonl" "${lm_options[@]}"
  done
  asr-s2s results conditions-table "$exp_dir" --weights "$ctc $lm $ngram" --sets "${sets[*]}" \
    --framing "${framing[*]}"  # writes results_conditions.md
  cat "$exp_dir"/results_{test,conditions}.md > "$exp_dir/RESULTS.md" 2>/dev/null || true
  touch "$exp_dir/.conditions.done"
fi

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ]; then
  echo "== stage 10: transcribe one test file" >&2
  # sed reads all of sort's output; with 'head -n 1', sort got SIGPIPE in 6-9 % of tries here and
  # pipefail ended the script silently before transcribing
  example=$(find "$corpus/test" -name '*.flac' | sort | sed -n 1p)
  weights=$(best all)
  read -r ctc lm ngram <<< "$weights"
  use_lms "$ctc" "$lm" "$ngram"
  asr-s2s transcribe --model "$exp_dir/model" "${lm_options[@]}" "$example"
  grep -h "$(basename "$example" .flac)" "$corpus"/test/*/*/*.trans.txt | sed 's/^/reference: /'
  echo "model package: $exp_dir/model; language models: $lm_dir/lm (lm $lm), $ngram_dir/lm.arpa (ngram $ngram); ctc $ctc" >&2
fi
