#!/usr/bin/env bash
# The main job: talk to voicebox through the microphone if there is one; otherwise
# hear a sample utterance through the virtual device and print what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
if .venv/bin/voicebox devices --require-input >/dev/null 2>&1; then
  exec .venv/bin/voicebox listen "$@"
fi
echo "run: no microphone here; simulating a conversation from a recorded sample instead"
mkdir -p build
.venv/bin/python -m voicebox.bench.scenarios --sample build/sample.wav
.venv/bin/voicebox simulate --in build/sample.wav --out build/reply.wav --events build/events.jsonl "$@"
echo "run: reply audio in build/reply.wav, events in build/events.jsonl"
