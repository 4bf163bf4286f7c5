#!/usr/bin/env bash
# Usage: bash benchmarks/peers/setup.sh
#
# Creates benchmarks/peers/.venv with the peer toolkit of requirements.txt
# (SpeechBrain), for `python benchmarks/decode_speed.py --peers`. torch and
# torchaudio are pinned to the versions installed in the project's .venv (read
# from it now, so both sides always run the same kernels), on the same Python.
# Needs only the package index pip is configured with. Re-running it is cheap:
# pip skips what is already installed.
set -euo pipefail

peers_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$peers_dir/../.." && pwd)
main_python="$repo_root/.venv/bin/python"
peer_venv="$peers_dir/.venv"

if [ ! -x "$main_python" ]; then
  echo "peers setup: $main_python not found; run 'bash tools/setup.sh' first" >&2
  exit 1
fi

# torch==X / torchaudio==Y as installed in the project's venv, and its base interpreter.
pins=$("$main_python" -c 'from importlib.metadata import version
for name in ("torch", "torchaudio"):
    print(f"{name}=={version(name)}")')
base_python=$("$main_python" -c 'import sys; print(sys._base_executable)')

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf '%s\n' "$pins" >"$constraints"
echo "peers setup: pinning $(echo $pins) (from $main_python)" >&2

if [ ! -x "$peer_venv/bin/python" ]; then
  echo "peers setup: creating $peer_venv" >&2
  "$base_python" -m venv "$peer_venv"
fi
# shellcheck disable=SC2086
"$peer_venv/bin/python" -m pip install -q $pins -c "$constraints"
"$peer_venv/bin/python" -m pip install -q -r "$peers_dir/requirements.txt" -c "$constraints"
"$peer_venv/bin/python" -c 'from importlib.metadata import version
print("peers setup: " + ", ".join(f"{n} {version(n)}" for n in ("speechbrain", "torch", "torchaudio")))' >&2
