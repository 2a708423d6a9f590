#!/usr/bin/env bash
# Judge agreement: run the independent judge (../shared/bench/v2v.py, one
# `voicebox simulate` process per scenario) and the project bench (models loaded once)
# on the same scenario set, and print both medians and their difference (target: 20 ms).
#   scripts/bench_judge.sh [OUT_DIR] [--only NAMES] [--runs N] [engine flags for both,
#                          e.g. --engine emulated --profile hc1-llama3.1-8b]
# --runs N runs each side N times and compares each turn at its median over the runs:
# on a loaded or shared machine a compute-limited turn moves ~100 ms between two runs,
# which one run a side cannot tell from the two measuring differently.
# v2v.py ignores the extra label keys ("texts", "pauses"), so it knows nothing of the
# labelled mid-sentence pauses; the project bench also reports replies inside them.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
OUT=${1:-reports/bench/judge}
shift || true
V2V=${V2V:-$(cd .. && pwd)/shared/bench/v2v.py}
PY=python3
python3 -c 'import numpy' 2>/dev/null || PY=.venv/bin/python
[ -f "$V2V" ] || { echo "bench_judge: $V2V not found (set V2V=...)" >&2; exit 2; }

rm -rf "$OUT/scenarios"
mkdir -p "$OUT"
.venv/bin/python -m voicebox.bench.scenarios --out "$OUT/scenarios"
ONLY=""
RUNS=1
FLAGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --only) ONLY=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) FLAGS+=("$1"); shift ;;
  esac
done
SIM_FLAGS=""
[ ${#FLAGS[@]} -eq 0 ] || SIM_FLAGS=$(printf ' %q' "${FLAGS[@]}")
if [ -n "$ONLY" ]; then  # v2v.py takes one name fragment; keep only the matching scenarios
  for lab in "$OUT"/scenarios/*.json; do
    stem=$(basename "$lab" .json) keep=0
    for frag in ${ONLY//,/ }; do [[ $stem == *"$frag"* ]] && keep=1; done
    [ $keep = 1 ] || rm -f "$lab" "${lab%.json}.wav"
  done
fi

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench_judge: --runs needs a whole number >= 1" >&2; exit 2; }

JUDGED=()
for k in $(seq 1 "$RUNS"); do
  name=v2v; [ "$RUNS" = 1 ] || name=v2v_$k
  echo "bench_judge: v2v.py on $(ls "$OUT"/scenarios/*.json | wc -l) scenarios (run $k of $RUNS)" >&2
  "$PY" "$V2V" "$OUT/scenarios" --cmd ".venv/bin/voicebox simulate -q${SIM_FLAGS} --in {inp} --out {out}" \
    --json "$OUT/$name.json" 2>"$OUT/$name.log" | tail -1 | tee "$OUT/${name}_summary.json"
  JUDGED+=("$OUT/$name.json")
done

echo "bench_judge: project bench on the same scenarios ($RUNS run(s))" >&2
.venv/bin/voicebox bench --no-naive --no-one-core --no-whole-asr --no-gaps --idle-s 0 \
  --repeat "$RUNS" --judge-json "${JUDGED[@]}" --report "$OUT/bench" ${ONLY:+--only "$ONLY"} \
  "${FLAGS[@]+"${FLAGS[@]}"}" | tail -1 > "$OUT/bench_summary.json"

.venv/bin/python - "$OUT/bench_summary.json" <<'PY'
import json, sys
from voicebox.bench.compare import turns_apart_text
from voicebox.bench.targets import JUDGE_AGREEMENT_MS as AGREE
j = json.load(open(sys.argv[1]))["judge"]
ok = j["difference_ms"] is not None and abs(j["difference_ms"]) <= AGREE
runs = f" (each turn at its median over {j['judge_runs']} runs a side)" if j["judge_runs"] > 1 else ""
print(f"v2v.py median {j['judge_p50_ms']} ms (p90 {j['judge_p90_ms']}, cut-offs "
      f"{j['judge_cutoffs']}); project bench median {j['bench_p50_ms']} ms (p90 "
      f"{j['bench_p90_ms']}, cut-offs {j['bench_cutoffs']}); difference "
      f"{j['difference_ms']} ms over {j['scenarios']} scenarios{runs}: "
      f"{'within' if ok else 'NOT within'} {AGREE} ms; per turn: median difference "
      f"{j['turn_difference_median_ms']} ms, {j['turns_within_20_ms']} of "
      f"{j['turns_compared']} turns within {AGREE} ms")
print(f"turns more than {AGREE} ms apart (bench minus judge): {turns_apart_text(j)}")
PY
