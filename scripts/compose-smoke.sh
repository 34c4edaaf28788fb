#!/usr/bin/env bash
# End-to-end check of the docker compose deployment against a real Docker engine (docs/deploy.md).
#
#   bash scripts/compose-smoke.sh                 # build molfusion:cpu, then run the checks below
#   SMOKE_SKIP_BUILD=1 bash scripts/compose-smoke.sh
#
# It builds the image (the CPU variant unless SMOKE_VARIANT=gpu), starts redis, api and worker with
# docker-compose.yml (+ docker-compose.cpu.yml) under a project name of its own, and checks:
#   1. the API answers /v1/health/ready and Docker reports the api container healthy (image HEALTHCHECK);
#   2. a recommendation uploaded to the API is run by the worker container and ends `done`;
#   3. /v1/predict answers with the default heads baked into the image;
#   4. the finished job's result survives a restart of the api container;
#   5. a worker killed in the middle of a job is restarted by compose and the job ends `failed`
#      (heartbeat lease), never stuck `running`.
# Everything is removed afterwards (`down -v`) unless SMOKE_KEEP=1.
#
# Variables: SMOKE_VARIANT (cpu|gpu), SMOKE_PORT (published API port, default 18000), SMOKE_PROJECT,
# SMOKE_BUILD_ARGS (extra `docker build` arguments, e.g. "--build-arg CPU_IMAGE=... --network host"),
# COMPOSE (the compose command, default `docker compose`), DEPLOY_CATALOG (catalog folder, default
# MOLFUSION_DATA_DIR or ../shared/datasets), DEPLOY_REDIS_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=${SMOKE_VARIANT:-cpu}
image=${DEPLOY_IMAGE:-molfusion:$variant}
project=${SMOKE_PROJECT:-molfusion-smoke}
port=${SMOKE_PORT:-18000}
catalog=$(cd "${DEPLOY_CATALOG:-${MOLFUSION_DATA_DIR:-../shared/datasets}}" && pwd)
read -r -a compose_cmd <<< "${COMPOSE:-docker compose}"
base="http://127.0.0.1:$port"
work=$(mktemp -d)

say() { printf '[compose-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# The containers read MOLFUSION_* from .env; the smoke run must not touch a deployment's .env, so its
# small recommendation settings come in through an override file of its own.
cat > "$work/smoke.yml" <<'YAML'
x-smoke-env: &smoke-env
  MOLFUSION_RECOMMEND_MAX_AUX_ROWS: "50"
  MOLFUSION_RECOMMEND_EVIDENCE_SEEDS: "1"
  MOLFUSION_JOB_LEASE_S: "15"
services:
  api:
    environment: *smoke-env
  worker:
    environment: *smoke-env
YAML
files=(-f docker-compose.yml)
[[ $variant == cpu ]] && files+=(-f docker-compose.cpu.yml)
files+=(-f "$work/smoke.yml")
export DEPLOY_IMAGE=$image DEPLOY_CATALOG=$catalog DEPLOY_API_PUBLISH=127.0.0.1:$port DEPLOY_WORKER_REPLICAS=1
compose() { "${compose_cmd[@]}" -p "$project" "${files[@]}" "$@"; }

cleanup() {
    local rc=$?
    if ((rc != 0)); then compose logs --no-color --tail 60 || true; fi
    if [[ ${SMOKE_KEEP:-0} != 1 ]]; then compose down -v --remove-orphans >/dev/null 2>&1 || true; fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
api() {  # api METHOD PATH [curl arguments...]: the response body; fails the run on an HTTP error
    local method=$1 path=$2 out code
    shift 2
    out=$(curl -sS -X "$method" -w '\n%{http_code}' "$base$path" "$@") || fail "$method $path: no answer"
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    [[ $code == 2* ]] || fail "$method $path answered $code: $out"
    printf '%s' "$out"
}
wait_until() {  # wait_until SECONDS WHAT COMMAND...
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - start < limit)) || fail "$what not reached in ${limit}s"
        sleep 2
    done
    say "$what after $((SECONDS - start))s"
}
ready() { curl -fsS "$base/v1/health/ready" >/dev/null 2>&1; }
healthy() { [[ $(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q api)") == healthy ]]; }
job_status() { curl -fsS "$base/v1/recommendations/$1" | json 'd["status"]'; }
job_is() {  # job_is ID STATUS: true once the job has STATUS; fails the run if it ends in another state
    local s
    s=$(job_status "$1")
    [[ $s == "$2" ]] && return 0
    [[ $s =~ ^(done|failed|cancelled)$ ]] && fail "job $1 ended $s: $(curl -fsS "$base/v1/recommendations/$1")"
    return 1
}
upload() {  # a 120-row BBBP target as the user would upload it
    python3 - "$catalog/moleculenet/bbbp.csv" > "$work/target.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))[200:320]
out = csv.writer(sys.stdout)
out.writerow(["smiles", "p_np"])
out.writerows([r["smiles"], r["p_np"]] for r in rows)
PY
    api POST /v1/recommendations -F "file=@$work/target.csv;type=text/csv" \
        -F smiles_column=smiles -F targets=p_np | json 'd["id"]'
}

if [[ ${SMOKE_SKIP_BUILD:-0} != 1 ]]; then
    say "building $image (VARIANT=$variant)"
    # shellcheck disable=SC2086  # SMOKE_BUILD_ARGS is a list of words
    docker build -t "$image" --build-arg "VARIANT=$variant" ${SMOKE_BUILD_ARGS:-} .
fi
say "image $image: $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"

compose up -d --no-build
wait_until 300 "API ready" ready
wait_until 240 "api container healthy (image HEALTHCHECK)" healthy

job=$(upload) || exit 1
say "recommendation job $job queued"
wait_until 900 "job $job done" job_is "$job" done
result=$(api GET "/v1/recommendations/$job")
say "recommended group: $(json 'd["result"]["recommended_group"]' <<< "$result")"
worker_log=$(compose logs --no-color worker)  # not piped into grep -q: its early exit fails the pipe
grep -q "recommendation job done.*$job" <<< "$worker_log" || fail "the worker's log does not mention job $job"

predict=$(api POST /v1/predict -H 'content-type: application/json' \
    -d '{"smiles": ["CCO", "c1ccccc1O"], "properties": ["bbbp", "esol"]}')
[[ $(json 'len(d["results"])' <<< "$predict") == 2 ]] || fail "predict answered $predict"
say "predict: $(json '{r["input"]: {h: round(next(iter(p["tasks"].values()))["value"], 3) for h, p in r["predictions"].items()} for r in d["results"]}' <<< "$predict")"

compose restart api >/dev/null
wait_until 300 "API ready after a restart" ready
[[ $(api GET "/v1/recommendations/$job") == "$result" ]] || fail "job $job changed across an api restart"
say "job $job kept across the api restart"

job2=$(upload) || exit 1
wait_until 300 "job $job2 running" job_is "$job2" running
worker=$(compose ps -q worker)
started=$(docker inspect -f '{{.State.StartedAt}}' "$worker")
docker exec "$worker" sh -c 'kill -9 -1' || true   # every process of the service user but init
say "worker killed during job $job2"
wait_until 120 "worker restarted by compose" \
    bash -c "[[ \$(docker inspect -f '{{.State.StartedAt}} {{.State.Running}}' $worker) != '$started true' ]] && \
             [[ \$(docker inspect -f '{{.State.Running}}' $worker) == true ]]"
wait_until 180 "job $job2 failed (lease expired), not stuck running" job_is "$job2" failed
say "reason: $(api GET "/v1/recommendations/$job2" | json 'd.get("error")')"
say "all checks passed"
