#!/usr/bin/env bash
# One GPU-host session of benchmarks (device tool): the numbers in docs/benchmarks.md marked "H100/H200".
#
# Carried (git-ignored): .whl/ (rdkit, xgboost-cpu, fastapi/uvicorn/pydantic stack, redis, arq wheels
# for Python 3.12) and .carry/gpu/ (moleculenet/*.csv and pretrain/moses_test.csv.gz).
# At most 8 files come back: 4 logs, probe JSON, heads tarball, embed JSON, serve JSON.
# Usage on the GPU host:  bash bench/run_gpu.sh "$OUT"
set -uo pipefail
RESULT=${1:-${OUT:-runs/gpu_bench}}
DATA=.carry/gpu
mkdir -p "$RESULT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() {  # step NAME SECONDS CMD...: run with a time limit, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@" > "$RESULT/$name.log" 2>&1; local rc=$?
  echo "=== $name rc=$rc in $((SECONDS - t0))s"; tail -n 40 "$RESULT/$name.log"
}
step probe "${PROBE_S:-240}" python3 bench/probe_quality.py --data-dir "$DATA" --out-dir /tmp/probe --seeds 3
cp /tmp/probe/*.json "$RESULT/" 2>/dev/null
step heads "${HEADS_S:-90}" python3 -m fusion.train_defaults --data-dir "$DATA" --cache /tmp/head-cache
tar czf "$RESULT/default_heads.tgz" fusion/default_heads
step embed "${EMBED_S:-110}" python3 bench/embed_throughput.py --data-dir "$DATA" --sizes default,xl --limit 50000 --one-core 3000 --repeats 1 \
  --json "$RESULT/embed.json"
step serve "${SERVE_S:-130}" python3 bench/serve_load.py --device cuda --data-dir "$DATA" --duration 3 --warmup 0.5 \
  --out "$RESULT/serve.json"
exit 0
