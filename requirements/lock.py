"""Regenerate the image lock files ``requirements/gpu.txt`` and ``requirements/cpu.txt``.

Run from the repository root with the project's virtual environment (it needs ``uv`` there)::

    .venv/bin/python requirements/lock.py            # regenerate both files
    .venv/bin/python requirements/lock.py --verify   # check them against the package index

``--verify`` asks pip to resolve each file for the image's platform with binary wheels only (a dry
run: metadata, no downloads) and fails when a pin has no wheel there or when the resolution needs a
package that the file does not pin (the lock is not closed). The ``+cpu`` torch of ``cpu.txt`` lives on
the PyTorch CPU index, not on PyPI, so that one line is left out of the check (its dependencies, the
same as those of the CUDA build less the CUDA libraries, are pinned and checked).

Method: the runtime dependencies of ``pyproject.toml`` (never the ``test`` extra) are resolved with
``uv pip compile`` for the image's platform (Linux x86_64, the Python of its Ubuntu 24.04 base),
constrained to the versions installed in the development environment, so the image runs the versions
the test suite ran. ``gpu.txt`` takes torch from PyPI, whose Linux wheels are CUDA builds with the CUDA
libraries as ``nvidia-*`` wheels. ``cpu.txt`` is the same resolution with torch's CUDA-only
dependencies excluded and the ``+cpu`` build of the same torch version from the PyTorch CPU index, and
with ``xgboost-cpu`` for ``xgboost`` (the same release and ``xgboost`` module without the CUDA kernels and
the NCCL wheel: about 600 MB less in the CPU image).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "requirements"
PYTHON_VERSION = "3.12"  # python3 of ubuntu:24.04 and nvidia/cuda:*-ubuntu24.04
PLATFORM = "x86_64-manylinux_2_39"  # glibc of Ubuntu 24.04
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# torch's Linux-only CUDA dependencies; excluding them leaves exactly the requirements of a +cpu wheel.
TORCH_CUDA_ONLY = (
    "triton",
    "cuda-toolkit",
    "cuda-bindings",
    "nvidia-cudnn-cu13",
    "nvidia-cusparselt-cu13",
    "nvidia-nvshmem-cu13",
    "nvidia-nccl-cu13",
)
# xgboost's CUDA-only dependency; the CPU image installs the xgboost-cpu distribution instead.
XGBOOST_CUDA_ONLY = ("nvidia-nccl-cu12",)
COMMAND = ".venv/bin/python requirements/lock.py"
MANYLINUX = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 40)] + ["manylinux2014_x86_64"]


def installed_pins() -> list[str]:
    """``name==version`` of every distribution in this environment except molfusion itself; a local
    version label (``2.13.0+cpu``) is dropped so the pin selects the same release on any index."""
    pins = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "molfusion":
            pins[name.lower()] = f"{name}=={dist.version.split('+')[0]}"
    return sorted(pins.values())


def compile_lock(constraints: Path, excludes: Path | None, output: Path) -> None:
    cmd = [
        str(Path(sys.executable).with_name("uv")), "pip", "compile", str(ROOT / "pyproject.toml"),
        "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
        "--constraints", str(constraints), "--no-annotate", "--quiet",
        "--custom-compile-command", COMMAND, "--output-file", str(output),
    ]
    if excludes is not None:
        cmd += ["--excludes", str(excludes)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def torch_to_cpu_build(text: str) -> str:
    """Pin the ``+cpu`` build of the resolved torch and add the index that serves it."""
    text, n = re.subn(r"^torch==([^\s+]+)$", r"torch==\1+cpu", text, flags=re.MULTILINE)
    if n != 1:
        raise SystemExit("expected exactly one torch pin in the CPU lock")
    return f"--extra-index-url {TORCH_CPU_INDEX}\n{text}"


def xgboost_to_cpu_build(text: str) -> str:
    """Pin ``xgboost-cpu`` at the resolved xgboost version (same module, no CUDA code, no NCCL)."""
    text, n = re.subn(r"^xgboost==(\S+)$", r"xgboost-cpu==\1", text, flags=re.MULTILINE)
    if n != 1:
        raise SystemExit("expected exactly one xgboost pin in the CPU lock")
    return text


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[_normalise(name)] = version
    return pins


def verify(name: str, skip_torch: bool) -> list[str]:
    """Problems of one lock file found by a binary-only dry-run resolution for the image platform."""
    source = OUT / name
    pins = read_pins(source)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / name
        lines = source.read_text().splitlines()
        if skip_torch:
            lines = [ln for ln in lines if not ln.startswith(("torch==", "--extra-index-url"))]
            pins.pop("torch")
        req.write_text("\n".join(lines) + "\n")
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
               "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
               "--target", str(Path(tmp) / "target"), "--report", str(report), "-r", str(req)]
        for tag in MANYLINUX:
            cmd += ["--platform", tag]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return [f"{name}: pip could not resolve it: {proc.stderr.strip().splitlines()[-1]}"]
        resolved = {_normalise(i["metadata"]["name"]): i["metadata"]["version"]
                    for i in json.loads(report.read_text())["install"]}
    problems = [f"{name}: needs {n}=={v}, which it does not pin"
                for n, v in resolved.items() if n not in pins]
    problems += [f"{name}: pins {n}=={v} but resolves {resolved.get(n)}" for n, v in pins.items()
                 if resolved.get(n) != v]
    return problems


def main() -> None:
    if "--verify" in sys.argv[1:]:
        problems = verify("gpu.txt", skip_torch=False) + verify("cpu.txt", skip_torch=True)
        print("\n".join(problems) or "requirements/gpu.txt and requirements/cpu.txt resolve as pinned")
        raise SystemExit(1 if problems else 0)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(installed_pins()) + "\n")
        excludes = Path(tmp) / "excludes.txt"
        excludes.write_text("\n".join(TORCH_CUDA_ONLY + XGBOOST_CUDA_ONLY) + "\n")
        compile_lock(constraints, None, OUT / "gpu.txt")
        compile_lock(constraints, excludes, OUT / "cpu.txt")
    cpu = OUT / "cpu.txt"
    cpu.write_text(xgboost_to_cpu_build(torch_to_cpu_build(cpu.read_text())))
    for name in ("gpu.txt", "cpu.txt"):
        pins = [line for line in (OUT / name).read_text().splitlines() if "==" in line]
        print(f"requirements/{name}: {len(pins)} pinned packages")


if __name__ == "__main__":
    main()
