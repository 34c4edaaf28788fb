#!/usr/bin/env bash
# Pretrain both default encoders concurrently on one GPU (the run that produced the shipped checkpoints).
#
# Needs (carried to the GPU host, all git-ignored):
#   .whl/rdkit-*.whl (or $WHEELS/)  RDKit for canonicalisation and featurization (the host has none)
#   .carry/moses_train.csv.gz     the raw MOSES train corpus (copy of ../shared/datasets/pretrain/)
#   .carry/references.csv.gz      every benchmark SMILES (`molfusion pretrain references --out ...`)
#   or, instead of those two, .carry/pretrain/moses_train_filtered.csv.gz, the output of
#   `molfusion pretrain corpus` run beforehand (it is then used as is).
# Step 1 filters the corpus on all cores (the same code as `molfusion pretrain corpus`); step 2 trains.
# KINDS="smiles graph" (default) trains both together on the one GPU; KINDS=graph only the graph encoder.
# Usage: bash models/pretrain/run_gpu.sh [RESULT_DIR]    (RESULT_DIR defaults to $OUT, else runs/gpu_out)
# Each pipeline times its first steps and sets its length to fill BUDGET_S seconds of training;
# both start training together (a file barrier) so the rate they measure is the shared-GPU rate.
set -euo pipefail
RESULT=${1:-${OUT:-runs/gpu_out}}
RUNS=${RUNS:-runs/pretrain}
BUDGET_S=${BUDGET_S:-330}
GUARD_S=${GUARD_S:-370}
LIMIT=${LIMIT:-0}  # >0: only the first LIMIT corpus rows (smoke tests)
KINDS=${KINDS:-smiles graph}
mkdir -p "$RESULT" "$RUNS"
if ! python3 -c 'import rdkit' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHEELS:-.whl}/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU") | tee "$RESULT/gpu.txt"
rm -f "$RUNS"/*.ready
CORPUS="$RUNS/moses_train_filtered.csv.gz"
if [ ! -f "$CORPUS" ] && [ -f .carry/pretrain/moses_train_filtered.csv.gz ]; then
  cp .carry/pretrain/moses_train_filtered.csv.gz "$CORPUS"
fi
if [ ! -f "$CORPUS" ]; then
  python3 - "$CORPUS" "$LIMIT" "$RESULT/filter_report.json" <<'EOF'
import json, sys, time
from pathlib import Path
from models.pretrain.corpus import build_filtered_corpus, read_corpus

t0 = time.monotonic()
refs = read_corpus(Path(".carry/references.csv.gz"))
report = build_filtered_corpus(Path(".carry/moses_train.csv.gz"), refs, Path(sys.argv[1]),
                               limit=int(sys.argv[2]) or None)
info = {**report.as_dict(), "seconds": round(time.monotonic() - t0, 1)}
Path(sys.argv[3]).write_text(json.dumps(info, indent=2) + "\n")
print("filter", info, flush=True)
EOF
fi

launch() {  # launch smiles|graph
  python3 - "$1" "$RUNS" "$BUDGET_S" "$GUARD_S" "$LIMIT" "$KINDS" <<'EOF'
import logging, sys, time
from pathlib import Path
from models.pretrain.pipelines import pretrain_graph, pretrain_smiles
from models.pretrain.trainer import TrainConfig

kind, runs, budget, guard = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
limit = int(sys.argv[5]) or None
together = len(sys.argv[6].split()) > 1
logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {kind} %(name)s %(message)s")
corpus = runs / "moses_train_filtered.csv.gz"

def barrier() -> None:  # wait (at most 4 minutes) until the other pipeline's data is ready too
    (runs / f"{kind}.ready").touch()
    if not together:
        return
    other = runs / ("graph.ready" if kind == "smiles" else "smiles.ready")
    deadline = time.monotonic() + 240
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.5)

if kind == "smiles":
    cfg = TrainConfig(time_budget_s=budget, batch_size=512, lr=8e-4, warmup_steps=500, weight_decay=0.01,
                      checkpoint_every=2000, log_every=50)
    pos = pretrain_smiles(corpus, runs / "smiles", cfg, max_seconds=guard, limit=limit, before_train=barrier)
else:
    cfg = TrainConfig(time_budget_s=budget, batch_size=512, lr=1e-3, warmup_steps=500, weight_decay=0.0,
                      checkpoint_every=2000, log_every=50)
    pos = pretrain_graph(corpus, runs / "graph", cfg, max_seconds=guard, limit=limit, before_train=barrier)
print(kind, "finished", pos, flush=True)
EOF
}

start=$(date +%s)
pids=()
for kind in $KINDS; do
  launch "$kind" > "$RESULT/${kind}_train.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "wall seconds: $(( $(date +%s) - start ))" | tee "$RESULT/wall.txt"
files=()
for kind in $KINDS; do
  tail -n 3 "$RESULT/${kind}_train.log"
  files+=("$kind/encoder" "$kind/log.jsonl" "$kind/data.json")
done
[ -f .carry/pretrain/moses_train_filtered.csv.gz ] || cp "$CORPUS" "$RESULT/"
tar czf "$RESULT/encoders.tgz" -C "$RUNS" "${files[@]}"
exit $status
