#!/usr/bin/env bash
# usage: bash scripts/setup.sh
# Idempotent set-up for a fresh clone: Debian packages (when root), a virtual environment in .venv with the
# pinned torch/torchaudio, and the project installed in editable mode. Fast the second time (stamp files).
set -euo pipefail
cd "$(dirname "$0")/.."

# asterisk-*: real recorded (non-English) voice prompts for the codec (speech/codec/real.py); the English
# prompt packages are never installed (kept out of the project for an independent check)
APT_PACKAGES=(espeak-ng libespeak-ng1 festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite
              codec2 opus-tools ffmpeg sox libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri
              asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722
              asterisk-core-sounds-ru-g722 asterisk-prompt-es-co asterisk-prompt-fr-armelle
              asterisk-prompt-it-menardi asterisk-prompt-it-menardi-wav
              chromium chromium-driver)  # the web client's browser test
TORCH_PINS=(torch==2.11.0 torchaudio==2.11.0)
PY=${PYTHON:-python3}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] warning: not root; missing Debian packages (TTS/codec tests will skip): ${missing[*]}" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

if ! $VPY -c "import torch, torchaudio, sys; sys.exit(0 if torch.__version__.startswith('2.11.0') and torchaudio.__version__.startswith('2.11.0') else 1)" 2>/dev/null; then
  echo "[setup] installing ${TORCH_PINS[*]}"
  $VPY -m pip install -q --disable-pip-version-check "${TORCH_PINS[@]}" 2>&1 | grep -v "is ignored" || true
fi

stamp=.venv/.setup-stamp
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing the project and its dependencies"
  $VPY -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" || true
  $VPY -c "import torch, torchaudio, einops, zarr, mujoco, gymnasium, sentencepiece, safetensors, tqdm" \
    || { echo "[setup] import check failed" >&2; exit 1; }
  touch "$stamp"
fi
