#!/usr/bin/env bash
# One GPU-host session of benchmarks (device tool): the numbers in docs/benchmarks.md marked "H100/H200".
#
# Carried (git-ignored): .whl/ (rdkit, xgboost-cpu, fastapi/starlette/uvicorn, pydantic(+core, settings),
# python-multipart, redis, arq wheels for Python 3.12; the host's image has the rest) and .carry/gpu/
# (the catalog files a run needs: moleculenet/, tdc/, pretrain/moses_test.csv.gz).
# At most 8 files come back; each step writes one log (and the probe/embed/serve steps a JSON).
# Usage on the GPU host:  STEPS="embed serve recommend" bash bench/run_gpu.sh "$OUT"
# chemprop peer on the GPU (bench/heads_benchmark.py's split files, every set at once, 3 seeds each):
#   WHEELS=.carry/cp/whl DATA=.carry/cp/data STEPS=chemprop bash bench/run_gpu.sh "$OUT"
# with .carry/cp/whl = rdkit 2026.3.6 (chemprop's cuik-molmaker pins it), chemprop 2.3.1, configargparse,
# astartes, descriptastorus, pandas-flavor, multiprocess, dill, cuik-molmaker-pin, myerson, and
# .carry/cp/bench/splits = the split files of `heads_benchmark.py splits` made on the CPU machine, and
# .carry/cp/xlibs = Debian's libxrender1 libx11-6 libxext6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0 (.deb;
# cuik-molmaker links RDKit's cairo, which needs them, and the host image has no X libraries).
set -uo pipefail
RESULT=${1:-${OUT:-runs/gpu_bench}}
DATA=${DATA:-.carry/gpu}
STEPS=${STEPS:-probe embed serve recommend}
mkdir -p "$RESULT"
WHEELS=${WHEELS:-.whl}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
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
      step embed "${EMBED_S:-360}" python3 bench/embed_throughput.py --data-dir "$DATA" --sizes default,xl \
        --limit 100000 --one-core 3000 --repeats 3 --parts-limit 10000 --capacity-workers 1,8,16 \
        --json "$RESULT/embed.json" ;;
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
    chemprop)
      work=${CHEMPROP_WORK:-.carry/cp/bench}
      for f in "${XLIBS:-.carry/cp/xlibs}"/*.deb; do dpkg -x "$f" /tmp/xlibs; done
      export LD_LIBRARY_PATH=/tmp/xlibs/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
      echo "=== chemprop (limit ${CHEMPROP_S:-540}s)"; t0=$SECONDS
      for ds in ${CHEMPROP_SETS:-tox21 hiv lipophilicity bbbp bace clintox sider esol freesolv}; do
        timeout "${CHEMPROP_S:-540}" python3 bench/heads_benchmark.py run --datasets "$ds" --methods chemprop \
          --data-dir "$DATA" --work "$work" --chemprop /tmp/site/bin/chemprop --chemprop-accelerator gpu \
          --chemprop-jobs 3 > "$RESULT/chemprop_$ds.log" 2>&1 &
      done
      wait; echo "=== chemprop done in $((SECONDS - t0))s"; tail -n 3 "$RESULT"/chemprop_*.log
      tar czf "$RESULT/chemprop.tgz" "$RESULT"/chemprop_*.log "$work/results" \
        $(find "$work/chemprop" -name '*.log' -o -name train_seconds.json) ;;
    finetune)
      # bench/grouping_finetune.py: grouping_eval's recorded groups, with the graph encoder trained on target
      # + group (random init and our checkpoint fine-tuned), one process per target:seed job (FT_JOBS, default
      # the 8 targets x seeds 0-2); FT_DATA = the file of `bench/grouping_finetune.py prepare` (graphs,
      # labels, groups; no catalog needed on the host); FT_INITS = --inits (default scratch,pretrained).
      echo "=== finetune jobs"; t0=$SECONDS
      jobs=${FT_JOBS:-$(for t in bbbp bace clintox esol pampa freesolv lipophilicity ppbr; do echo $t:0 $t:1 $t:2; done)}
      for job in $jobs; do
        t=${job%%:*}; seed=${job#*:}
        OMP_NUM_THREADS=1 timeout "${FINETUNE_S:-520}" python3 bench/grouping_finetune.py run \
          --data "${FT_DATA:-.carry/gft/data.pkl.gz}" --targets "$t" --seeds "$seed" --threads 1 \
          --inits "${FT_INITS:-scratch,pretrained}" \
          --out "$RESULT/finetune_${t}_$seed.json" > "$RESULT/finetune_${t}_$seed.log" 2>&1 &
      done
      wait; echo "=== finetune jobs done in $((SECONDS - t0))s"; tail -q -n 1 "$RESULT"/finetune_*.log
      python3 bench/grouping_finetune.py report "$RESULT"/finetune_*.json
      tar czf "$RESULT/finetune.tgz" -C "$RESULT" $(cd "$RESULT" && ls finetune_*) && rm "$RESULT"/finetune_*.json \
        "$RESULT"/finetune_*.log ;;
    grouping)
      # bench/grouping_eval.py on the host's 16 cores: the catalog embedded once on the GPU, then one process
      # per target (2 torch threads each). DATA = the subsample written by
      # `bench/grouping_eval.py --export-subsample .carry/grp/data --max-rows 1000` (the very rows of the
      # CPU protocol); WHEELS = rdkit and the pydantic(-settings) stack. TRANSFERS = grouping_eval --transfers;
      # FIRST_SEED/SEEDS split the seeds over several calls (then grouping_eval --merge of every JSON);
      # ROUTINGS = space-separated grouping_eval --routing specs (default: molgroup). AUX_DATA (+ AUX_READ_ROWS)
      # = a folder the candidates are read from (e.g. the --export-subsample of --max-rows 2000) and
      # AUX_ROWS their cap (default 500, the CPU protocol's). MODEL_SEEDS = grouping_eval --model-seeds;
      # NESTED=1 adds --nested-check.
      cache=/tmp/grouping-cache; weights=${AUX_WEIGHTS:-none,1,0.3,0.1}; rows=${MAX_ROWS:-1000}
      transfers=${TRANSFERS:-joint}; first=${FIRST_SEED:-0}
      routing_args=(); for r in ${ROUTINGS:-molgroup}; do routing_args+=(--routing "$r"); done
      aux_args=(--max-aux-rows "${AUX_ROWS:-500}")
      [ -n "${AUX_DATA:-}" ] && aux_args+=(--aux-catalog "$AUX_DATA" --aux-read-rows "${AUX_READ_ROWS:-$rows}")
      step grouping_embed 300 python3 bench/grouping_eval.py --catalog "$DATA" --max-rows "$rows" --cache "$cache" \
        "${aux_args[@]}" --embed-only
      echo "=== grouping targets"; t0=$SECONDS
      for t in ${GROUPING_TARGETS:-bbbp bace clintox esol pampa freesolv lipophilicity ppbr}; do
        OMP_NUM_THREADS=2 timeout "${GROUPING_S:-480}" python3 bench/grouping_eval.py --catalog "$DATA" --targets "$t" \
          --seeds "${SEEDS:-3}" --max-rows "$rows" "${aux_args[@]}" --threads 2 --cache "$cache" \
          --aux-weights "$weights" --transfers "$transfers" --first-seed "$first" --model-seeds "${MODEL_SEEDS:-1}" \
          ${NESTED:+--nested-check} \
          "${routing_args[@]}" \
          --out "$RESULT/grouping_${t}_s$first.json" > "$RESULT/grouping_${t}_s$first.log" 2>&1 &
      done
      wait; echo "=== grouping targets done in $((SECONDS - t0))s"
      python3 bench/grouping_eval.py --aux-weights "$weights" --transfers "$transfers" \
        --merge "$(ls "$RESULT"/grouping_*.json | paste -sd,)" > "$RESULT/grouping.md" 2>&1
      cat "$RESULT/grouping.md"
      tar czf "$RESULT/grouping.tgz" "$RESULT"/grouping_*.json "$RESULT"/grouping_*.log
      rm -f "$RESULT"/grouping_*.json "$RESULT"/grouping_*.log ;;
    *) echo "unknown step $s" ;;
  esac
done
exit 0
