#!/usr/bin/env bash
# Usage: bash recipes/mini_librispeech/run.sh [--stage N] [--stop-stage N] [--hours H] [--epochs E]
#                                            [--config FILE] [--exp-dir DIR] [--seed S]
#
# The bundled corpus, end to end, from any working directory:
#   0. synthesise the corpus with espeak-ng (LibriSpeech layout) into corpus/
#   1. write JSON-lines manifests for train/dev/test into dump/
#   2. compute global CMVN statistics on train
#   3. train; the model package lands in exp/<name>/model
#   4. evaluate dev and test with greedy search, test with beam search, and print a WER/CER table
#   5. transcribe one test file with the trained model
# Each finished stage leaves a .done marker; a re-run skips it. Delete the
# marker (or pass --stage N) to redo a stage.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$recipe_dir/../.." && pwd)

stage=0
stop_stage=5
hours=2.0
epochs=""
seed=0
config="$recipe_dir/conf/las_mini.yaml"
exp_dir=""

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --hours) hours=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --config) config=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --exp-dir) exp_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v asr-s2s >/dev/null || { echo "run.sh: asr-s2s not on PATH; run 'bash tools/setup.sh' and activate .venv" >&2; exit 2; }

corpus="$recipe_dir/corpus/hours_${hours}_seed_${seed}"
dump="$recipe_dir/dump/hours_${hours}_seed_${seed}"
name=$(basename "$config" .yaml)
exp_dir=${exp_dir:-"$recipe_dir/exp/${name}_${hours}h${epochs:+_${epochs}ep}"}
mkdir -p "$dump" "$exp_dir"

run_stage() {  # run_stage N MARKER DESCRIPTION: true when stage N must run
  local n=$1 marker=$2
  [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ] || return 1
  if [ -f "$marker" ] && [ "$stage" -lt "$n" ]; then echo "== stage $n: $3 (done, skipped)" >&2; return 1; fi
  echo "== stage $n: $3" >&2
  rm -f "$marker"
}

if run_stage 0 "$corpus/.done" "synthesise the corpus ($hours h of training speech)"; then
  python "$repo_root/data/make_mini_librispeech.py" --out "$corpus" --hours "$hours" --seed "$seed"
  touch "$corpus/.done"
fi

if run_stage 1 "$dump/.manifests.done" "manifests"; then
  for split in train dev test; do
    asr-s2s prepare --data-dir "$corpus/$split" --out "$dump/$split.jsonl"
  done
  touch "$dump/.manifests.done"
fi

if run_stage 2 "$dump/.cmvn.done" "global CMVN"; then
  asr-s2s compute-cmvn --manifest "$dump/train.jsonl" --out "$dump/cmvn.json" --num-workers 0
  touch "$dump/.cmvn.done"
fi

if run_stage 3 "$exp_dir/.train.done" "train ($exp_dir)"; then
  resume=""
  [ -d "$exp_dir/checkpoints" ] && resume="--resume"
  asr-s2s train --config "$config" --train-manifest "$dump/train.jsonl" --valid-manifest "$dump/dev.jsonl" \
    --cmvn "$dump/cmvn.json" --exp-dir "$exp_dir" ${epochs:+--epochs "$epochs"} $resume
  touch "$exp_dir/.train.done"
fi

if run_stage 4 "$exp_dir/.decode.done" "evaluate dev and test"; then
  for split in dev test; do
    asr-s2s evaluate --model "$exp_dir/model" --manifest "$dump/$split.jsonl" --beam-size 1 \
      --scorer length_bonus=0 --output-dir "$exp_dir/decode_${split}_greedy" --json > "$exp_dir/decode_${split}_greedy.json"
  done
  # beam search with the model's decode config (decode: in the YAML)
  asr-s2s evaluate --model "$exp_dir/model" --manifest "$dump/test.jsonl" \
    --output-dir "$exp_dir/decode_test_beam" --json > "$exp_dir/decode_test_beam.json"
  python - "$exp_dir" <<'PY'
import json, sys
from pathlib import Path
exp = Path(sys.argv[1])
rows = ["| set | search | utts | WER % | CER % | sub | del | ins |", "|---|---|---:|---:|---:|---:|---:|---:|"]
for split, search in (("dev", "greedy"), ("test", "greedy"), ("test", "beam")):
        r = json.loads((exp / f"decode_{split}_{search}.json").read_text())
        rows.append(f"| {split} | {search} | {r['utterances']} | {r['wer']:.2f} | {r['cer']:.2f} | "
                    f"{r['substitutions']} | {r['deletions']} | {r['insertions']} |")
(exp / "RESULTS.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
  touch "$exp_dir/.decode.done"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  echo "== stage 5: transcribe one test file" >&2
  example=$(find "$corpus/test" -name '*.flac' | sort | head -n 1)
  asr-s2s transcribe --model "$exp_dir/model" "$example"
  grep -h "$(basename "$example" .flac)" "$corpus"/test/*/*/*.trans.txt | sed 's/^/reference: /'
  echo "model package: $exp_dir/model" >&2
fi
