"""A small, exactly resumable training loop shared by both pretraining pipelines.

Schedule: linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``
at ``steps``. Optimisation step ``t = 1 .. T`` runs with

    lr(t) = lr * t / W                                                     (t < W)
    lr(t) = lr * (r + (1 - r) * 0.5 * (1 + cos(pi * (t - W) / (T - W))))   (t >= W)

so the first step already moves the weights (``lr / W``), step ``W`` runs at the peak and step ``T`` at
``r * lr``. The learning rate depends on the step alone, so a resumed run follows the same schedule.

Data order: epoch ``e`` visits the examples in ``randperm(N)`` drawn from a generator seeded with
``seed + e``; a step takes the next ``batch_size`` indices (the last partial batch of an epoch is
dropped). The data position is therefore just ``(epoch, offset)``.

A checkpoint holds the full pretraining model, the AdamW moments, the step, the data position and
every random state in play (CPU and CUDA default generators, the task's masking generator), so that
``N`` steps in one go and ``N/2`` steps, a restart and ``N/2`` more give bit-identical weights.
Tensors are stored as safetensors and everything else as JSON (no pickle).

When ``steps`` is 0 the length is derived from a wall-clock budget: the first ``calibrate_steps``
(which lie inside the warm-up, where the schedule does not depend on the length) are timed and the
total is fixed from that rate, then stored in the checkpoint so that resumed runs keep it.

Console progress: a tqdm bar over the optimisation steps on stderr, with the mean loss of the last
logged window and the current learning rate in its postfix. ``progress=None`` shows it only when stderr
is a terminal (so redirected runs and their structured logs are unchanged). Log records share stderr
with a live bar; keeping each on a line of its own is the console log handler's part (the CLI's, in
``app/logging_setup.py``). ``log.jsonl`` is written either way.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from models.checkpoint import read_meta
from models.progress import bar_disable

log = logging.getLogger(__name__)

STATE_DIR = "state"
LOG_FILE = "log.jsonl"
TRAINER_FILE = "trainer.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"


@dataclass
class TrainConfig:
    """Optimisation settings; ``steps == 0`` means: derive the length from ``time_budget_s``."""

    steps: int = 0
    time_budget_s: float = 0.0
    calibrate_steps: int = 200
    batch_size: int = 512
    lr: float = 5e-4
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 2000
    log_every: int = 100

    def validate(self) -> None:
        if self.steps < 0:
            raise ValueError(f"--steps: steps must be >= 0 (0 = use the time budget), got {self.steps}")
        if self.time_budget_s < 0:
            raise ValueError(f"--budget-minutes: the time budget must be >= 0, got {self.time_budget_s}")
        if not self.lr > 0:
            raise ValueError(f"--lr: lr must be > 0, got {self.lr}")
        if self.steps <= 0 and self.time_budget_s <= 0:
            raise ValueError("--steps/--budget-minutes: set either steps > 0 or a time budget > 0")
        if self.steps <= 0 and self.calibrate_steps >= self.warmup_steps:
            raise ValueError("calibrate_steps must be smaller than warmup_steps when steps are derived")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        raw = dict(raw)
        raw["betas"] = tuple(raw["betas"])
        return cls(**raw)


class PretrainTask(Protocol):
    """What the loop needs from a pipeline (SMILES MLM or graph attribute masking)."""

    model: nn.Module
    generator: torch.Generator  # the task's own masking randomness (checkpointed)

    @property
    def num_examples(self) -> int: ...

    def loss(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward pass on the examples ``indices``; must contain ``"loss"``."""
        ...

    def export(self, directory: Path, meta: dict) -> str:
        """Write the shipped encoder (without pretraining heads); returns its version."""
        ...


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """Learning rate of optimisation step ``step`` of ``total`` (1-based: the first step is step 1)."""
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(total - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases, norms and embedding tables are not decayed."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or "embedding" in name or "tables" in name or "norm" in name or ".ln" in name
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=0.0, betas=cfg.betas)


@dataclass
class Position:
    step: int = 0
    epoch: int = 0
    offset: int = 0
    total_steps: int = 0


class EpochSampler:
    """Index batches in a per-epoch random order (see the module docstring)."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, position: Position) -> None:
        if num_examples < batch_size:
            raise ValueError(f"corpus has {num_examples} examples, fewer than one batch ({batch_size})")
        self.n, self.batch_size, self.seed, self.position = num_examples, batch_size, seed, position
        self._perm = self._permutation(position.epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=gen)

    def next(self) -> torch.Tensor:
        pos = self.position
        if pos.offset + self.batch_size > self.n:
            pos.epoch, pos.offset = pos.epoch + 1, 0
            self._perm = self._permutation(pos.epoch)
        batch = self._perm[pos.offset : pos.offset + self.batch_size]
        pos.offset += self.batch_size
        return batch


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors = {f"{pid}.{key}": value.detach().cpu().contiguous()
               for pid, entry in state["state"].items() for key, value in entry.items()}
    return tensors, {"param_groups": state["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})


def save_checkpoint(out: Path, task: PretrainTask, opt: torch.optim.Optimizer, cfg: TrainConfig,
                    position: Position, extra: dict) -> None:
    """Write the resumable state into ``out/state`` atomically (temp folder, then rename)."""
    tmp = out / (STATE_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model_state = {k: v.detach().cpu().contiguous() for k, v in task.model.state_dict().items()}
    save_file(model_state, str(tmp / MODEL_FILE))
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    save_file(opt_tensors, str(tmp / OPTIMIZER_FILE))
    rng = {"cpu": torch.get_rng_state(), "task": task.generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / RNG_FILE))
    meta = {"config": asdict(cfg), "position": asdict(position), "optimizer": opt_meta, **extra}
    (tmp / TRAINER_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    _replace_dir(tmp, out / STATE_DIR)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``final`` by renames (the old one is kept as
    ``<final>.old`` until the new one is in place, so a kill never leaves a half-written ``final``)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    out: Path, task: PretrainTask, opt: torch.optim.Optimizer
) -> tuple[TrainConfig, Position]:
    src = out / STATE_DIR
    meta = json.loads((src / TRAINER_FILE).read_text())
    device = next(task.model.parameters()).device
    task.model.load_state_dict({k: v.to(device) for k, v in load_file(str(src / MODEL_FILE)).items()})
    _load_optimizer(opt, load_file(str(src / OPTIMIZER_FILE)), meta["optimizer"])
    rng = load_file(str(src / RNG_FILE))
    torch.set_rng_state(rng["cpu"])
    task.generator.set_state(rng["task"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return TrainConfig.from_dict(meta["config"]), Position(**meta["position"])


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a checkpoint; a run killed between :func:`save_checkpoint`'s two renames
    left only ``state.old`` (the previous, complete checkpoint), which is put back first."""
    old = out / (STATE_DIR + ".old")
    if not (out / STATE_DIR).exists() and (old / TRAINER_FILE).exists():
        old.rename(out / STATE_DIR)
    return (out / STATE_DIR / TRAINER_FILE).exists()


# What a run is, beyond its TrainConfig: a resume must not change any of it (keys of the run's meta).
RUN_IDENTITY = ("corpus", "corpus_sha256", "smiles_column", "limit", "model", "motifs")


def check_resumable(out: Path, cfg: TrainConfig, meta: dict) -> None:
    """``ValueError`` when ``out`` holds a run made with other settings than ``cfg`` or another corpus,
    SMILES column, row limit or model (:data:`RUN_IDENTITY` keys of ``meta``): resuming would train with
    the old ones and record the new ones. A key the run did not record (older runs) is not compared.
    Reads only ``trainer.json``, so callers run it before writing into ``out``."""
    if not has_checkpoint(out):
        return
    try:
        saved = json.loads((out / STATE_DIR / TRAINER_FILE).read_text())
        saved_cfg = saved["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{out}/{STATE_DIR}/{TRAINER_FILE} is damaged ({exc}); remove {out}/{STATE_DIR} "
                         "to start over") from exc
    new_cfg = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as stored
    differ = [f"{k}: {saved_cfg.get(k)!r} in the run, {v!r} now" for k, v in new_cfg.items()
              if saved_cfg.get(k) != v]
    saved_meta = saved.get("meta", {})
    differ += [f"{k}: {saved_meta.get(k)!r} in the run, {meta.get(k)!r} now" for k in RUN_IDENTITY
               if k in saved_meta and saved_meta.get(k) != meta.get(k)]
    if differ:
        raise ValueError(f"{out} holds a run with other settings ({'; '.join(differ)}); resume with the same "
                         "options or use a new --out")


def _export_encoder(task: PretrainTask, export_dir: Path, meta: dict) -> None:
    """Write the encoder into a temporary folder and rename it into place, so a run stopped meanwhile
    never leaves a half-written or mislabelled encoder (its version names its weights)."""
    tmp = export_dir.with_name(export_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    task.export(tmp, meta)
    _replace_dir(tmp, export_dir)


def _exported_steps(export_dir: Path) -> int | None:
    try:
        return read_meta(export_dir).get("steps")
    except (OSError, ValueError):
        return None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a run killed between checkpoints)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in lines))


@contextmanager
def progress_bar(position: Position, enabled: bool | None = None) -> Iterator[tqdm]:
    """A tqdm bar over the optimisation steps, starting at ``position`` (see the module docstring);
    ``enabled=None``: only when stderr is a terminal."""
    bar = tqdm(total=position.total_steps or None, initial=position.step, unit="step", desc="pretrain",
               dynamic_ncols=True, disable=bar_disable(enabled))
    try:
        yield bar
    finally:
        bar.close()


def train(
    task: PretrainTask,
    cfg: TrainConfig,
    out: Path,
    max_seconds: float | None = None,
    stop_after: int | None = None,
    export_dir: Path | None = None,
    meta: dict | None = None,
    on_log: Callable[[dict], None] | None = None,
    progress: bool | None = None,
) -> Position:
    """Train (or resume) ``task`` in ``out``; returns the position reached.

    ``max_seconds`` / ``stop_after`` end this invocation early (after a checkpoint) without changing
    the schedule, so a later call continues exactly where this one stopped. ``progress``: show the
    console progress bar (``None``: when stderr is a terminal).
    """
    out.mkdir(parents=True, exist_ok=True)
    device = next(task.model.parameters()).device
    opt = make_optimizer(task.model, cfg)
    if has_checkpoint(out):
        check_resumable(out, cfg, meta or {})
        try:
            cfg, position = load_checkpoint(out, task, opt)
        except Exception as exc:  # missing or damaged files in state/
            raise ValueError(f"the checkpoint in {out}/{STATE_DIR} cannot be loaded ({type(exc).__name__}: "
                             f"{exc}); remove {out}/{STATE_DIR} to start over") from exc
        log.info("resumed", extra={"step": position.step, "epoch": position.epoch, "out": str(out)})
    else:
        cfg.validate()
        position = Position(total_steps=cfg.steps)
        torch.manual_seed(cfg.seed)
        task.generator.manual_seed(cfg.seed + 1)
    _truncate_log(out / LOG_FILE, position.step)
    sampler = EpochSampler(task.num_examples, cfg.batch_size, cfg.seed, position)
    autocast = device.type == "cuda"
    start = time.monotonic()
    calib_start: float | None = None
    sums: dict[str, torch.Tensor] = {}
    count = 0
    invocation_steps = 0
    task.model.train()
    calib_from = min(20, cfg.calibrate_steps // 2)  # steps before it (start-up) are not timed
    loss_shown = "-"  # the mean loss of the last logged window (a per-step value would sync the GPU)
    with progress_bar(position, progress) as bar:
        while position.total_steps == 0 or position.step < position.total_steps:
            if position.total_steps == 0 and position.step == calib_from:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                calib_start = time.monotonic()
            if position.total_steps == 0 and position.step == cfg.calibrate_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                rate = (cfg.calibrate_steps - calib_from) / (time.monotonic() - (calib_start or start))
                position.total_steps = max(cfg.warmup_steps + 1, int(rate * cfg.time_budget_s) // 100 * 100)
                bar.total = position.total_steps
                log.info("length calibrated",
                         extra={"steps_per_s": round(rate, 2), "steps": position.total_steps})
            indices = sampler.next().to(device, non_blocking=True)
            lr = learning_rate(cfg, position.step + 1, position.total_steps or 10**9)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                metrics = task.loss(indices)
            metrics["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(task.model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            position.step += 1
            invocation_steps += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
            count += 1
            if position.step % cfg.log_every == 0 or position.step == position.total_steps:
                record = {"step": position.step, "epoch": position.epoch, "lr": lr,
                          "elapsed_s": round(time.monotonic() - start, 2),
                          **{k: round(float(v) / count, 5) for k, v in sums.items()}}
                with open(out / LOG_FILE, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if on_log is not None:
                    on_log(record)
                loss_shown = f"{record['loss']:.4f}"
                sums, count = {}, 0
            bar.set_postfix(loss=loss_shown, lr=f"{lr:.2e}", refresh=False)
            bar.update()
            done = position.total_steps and position.step >= position.total_steps
            out_of_time = max_seconds is not None and time.monotonic() - start >= max_seconds
            stop = stop_after is not None and invocation_steps >= stop_after
            if done or out_of_time or stop or position.step % cfg.checkpoint_every == 0:
                save_checkpoint(out, task, opt, cfg, position, {"meta": meta or {}})
                if export_dir is not None:
                    _export_encoder(task, export_dir, {**(meta or {}), "steps": position.step,
                                                       "planned_steps": position.total_steps})
                log.info("checkpoint", extra={"step": position.step, "out": str(out)})
            if done or out_of_time or stop:
                break
    if export_dir is not None and _exported_steps(export_dir) != position.step:
        # stopped after the checkpoint and before the encoder was written: write it from the checkpoint
        _export_encoder(task, export_dir, {**(meta or {}), "steps": position.step,
                                           "planned_steps": position.total_steps})
    task.model.eval()
    return position
