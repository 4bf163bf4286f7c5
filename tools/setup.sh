#!/usr/bin/env bash
# Usage: bash tools/setup.sh [--dev]
#
# Installs everything asr-s2s needs on a fresh Debian machine:
#   - Debian packages: the bundled corpus's synthesisers espeak-ng, flite and
#     festival with its voices festvox-kallpc16k, festvox-kdlpc16k and
#     festvox-us-slt-hts, and its sentences wordnet-base; irstlm (the bundled
#     recipe's word n-gram LM), sox, ffmpeg (mp3/m4a decoding fallback) and
#     libsndfile1;
#   - a virtual environment in .venv with torch, torchaudio and asr-s2s
#     (editable); --dev adds the test tools, the server's packages (the
#     'serve' extra) and Debian's chromium and chromium-driver (the page test
#     drives them; a browser downloaded at install time cannot be fetched).
# Re-running it is cheap: finished steps are skipped.
# TORCH_SPEC overrides the torch pins, e.g. TORCH_SPEC="torch==2.11.0 torchaudio==2.11.0".
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extras=""
[ "${1:-}" = "--dev" ] && extras="[test]"
# torch 2.14.1 (on this machine's disk) with torchaudio 2.11.0 runs on the CPU;
# the CPU-only torch 2.13.0 build fails to import torchaudio.
torch_spec=${TORCH_SPEC:-"torch==2.14.1 torchaudio==2.11.0"}

apt_packages="espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts wordnet-base irstlm sox ffmpeg libsndfile1"
if [ -n "$extras" ]; then apt_packages="$apt_packages chromium chromium-driver"; fi
missing=""
for pkg in $apt_packages; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing Debian packages:$missing" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

cd "$repo_root"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $torch_spec
.venv/bin/python -m pip install -q -e ".$extras"
.venv/bin/asr-s2s --version >&2
