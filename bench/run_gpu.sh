#!/usr/bin/env bash
# One GPU-host session of benchmarks (device tool): the numbers in docs/benchmarks.md marked "H100/H200".
#
# Carried (git-ignored): .whl/ (rdkit, xgboost-cpu, fastapi/starlette/uvicorn, pydantic(+core, settings),
# python-multipart, redis, arq wheels for Python 3.12; the host's image has the rest) and .carry/gpu/
# (the catalog files a run needs: moleculenet/, tdc/, pretrain/moses_test.csv.gz).
# At most 8 files come back; each step writes one log (and the probe/embed/serve steps a JSON).
# Usage on the GPU host:  STEPS="embed serve recommend" bash bench/run_gpu.sh "$OUT"
set -uo pipefail
RESULT=${1:-${OUT:-runs/gpu_bench}}
DATA=${DATA:-.carry/gpu}
STEPS=${STEPS:-probe embed serve recommend}
mkdir -p "$RESULT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() {  # step NAME SECONDS CMD...: run with a time limit, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@" >> "$RESULT/$name.log" 2>&1; local rc=$?
  echo "=== $name rc=$rc in $((SECONDS - t0))s"; tail -n 25 "$RESULT/$name.log"
}
for s in $STEPS; do
  case $s in
    probe)
      step probe "${PROBE_S:-420}" python3 bench/probe_quality.py --data-dir "$DATA" --out-dir "$RESULT" --seeds 3 ;;
    embed)
      step embed "${EMBED_S:-240}" python3 bench/embed_throughput.py --data-dir "$DATA" --sizes default,xl \
        --limit 50000 --one-core 3000 --repeats 3 --parts-limit 10000 --json "$RESULT/embed.json" ;;
    serve)
      step serve "${SERVE_S:-200}" python3 bench/serve_load.py --device cuda --encoders default --data-dir "$DATA" \
        --duration 3 --warmup 0.5 ${SERVE_ARGS:-} --out "$RESULT/serve.json" ;;
    recommend)
      # The recommendation as a user runs it (default options), cold (catalog embedded on the GPU) then
      # warm (catalog embeddings read from the cache). Sets not carried are left out of the catalog.
      skip=bace,hiv,muv,qm8,qm9,aqsoldb
      for phase in ${RECOMMEND_PHASES:-cold warm}; do
        step "recommend" "${RECOMMEND_S:-150}" python3 -m app.cli recommend "$DATA/moleculenet/bace.csv" \
          --targets Class --catalog "$DATA" --exclude "$skip" -o "/tmp/recommend/$phase.json"
        cp "/tmp/recommend/$phase.json" "$RESULT/recommend_$phase.json"  # not its PNG: 8 files come back
      done ;;
    *) echo "unknown step $s" ;;
  esac
done
exit 0
