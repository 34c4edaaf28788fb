"""Console progress of the pretraining loop (tqdm bar on stderr) and its warm-up schedule, on a toy task."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from models.pretrain import trainer
from models.pretrain.trainer import TrainConfig, train


class ToyTask:
    """A linear regression with the :class:`~models.pretrain.trainer.PretrainTask` interface."""

    def __init__(self, n: int = 64) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.generator = torch.Generator()
        self.x = torch.randn(n, 4)
        self.y = self.x.sum(dim=1, keepdim=True)

    @property
    def num_examples(self) -> int:
        return self.x.shape[0]

    def loss(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.model(self.x[indices]), self.y[indices])}

    def export(self, directory: Path, meta: dict) -> str:
        raise NotImplementedError


def _cfg(**changes: float) -> TrainConfig:
    base = {"steps": 6, "batch_size": 16, "lr": 1e-2, "warmup_steps": 3, "log_every": 2}
    return TrainConfig(**{**base, **changes})


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _cli_logging() -> None:
    """The CLI's logging set-up: JSON lines on (the test's captured) stderr, INFO."""
    from app.logging_setup import configure_logging

    configure_logging("INFO", json_lines=True)


def test_forced_progress_bar_shows_steps_loss_and_lr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    _cli_logging()
    train(ToyTask(), _cfg(), tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    states = [s for s in re.split(r"[\r\n]", err) if s.startswith("pretrain:")]
    assert states, err
    assert "0/6" in states[0]  # drawn before the first step ...
    final = states[-1]  # ... and updated up to the last one, with the last logged loss and the lr
    last = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert "6/6" in final and f"loss={last['loss']:.4f}" in final and f"lr={last['lr']:.2e}" in final, final
    # log records written while the bar is live still come out, as whole JSON objects (that each starts a
    # line of its own is the console log handler's part, app.logging_setup)
    records = [json.loads(m) for m in re.findall(r'\{"ts".*\}', err)]
    assert any(r["msg"] == "checkpoint" and r["step"] == 6 for r in records), err


def test_progress_bar_of_a_resumed_run_starts_at_its_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(ToyTask(), _cfg(), tmp_path / "run", stop_after=4)
    capsys.readouterr()
    train(ToyTask(), _cfg(), tmp_path / "run", progress=True)
    states = [s for s in re.split(r"[\r\n]", capsys.readouterr().err) if s.startswith("pretrain:")]
    assert "4/6" in states[0] and "6/6" in states[-1], states


def test_without_a_terminal_no_bar_and_the_logs_are_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    _cli_logging()
    assert not sys.stderr.isatty()
    pos = train(ToyTask(), _cfg(), tmp_path / "run")  # progress=None: the bar decides by itself
    err = capsys.readouterr().err
    assert pos.step == 6 and "pretrain:" not in err and "\r" not in err, err
    lines = err.splitlines()
    assert lines and all(json.loads(line)["ts"] for line in lines)  # nothing but the JSON log lines
    logged = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [2, 4, 6]


def test_progress_false_turns_the_bar_off_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    train(ToyTask(), _cfg(), tmp_path / "off", progress=False)
    assert "pretrain:" not in capsys.readouterr().err
    train(ToyTask(), _cfg(), tmp_path / "auto")  # on a terminal, progress=None shows it
    assert "pretrain:" in capsys.readouterr().err


def _optimizer_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every ``optimizer.step()`` of the runs that follow."""
    seen: list[float] = []
    real = trainer.make_optimizer

    def recording(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
        opt = real(model, cfg)
        opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))
        return opt

    monkeypatch.setattr(trainer, "make_optimizer", recording)
    return seen


def test_first_step_has_a_positive_lr_and_the_peak_is_at_the_warmup_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lrs = _optimizer_lrs(monkeypatch)
    cfg = _cfg(steps=8, lr=1e-2, warmup_steps=4, min_lr_ratio=0.1, log_every=1)
    train(ToyTask(), cfg, tmp_path / "run")
    assert lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # step t of the warm-up: lr * t / W
    assert lrs[3] == max(lrs)
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:], strict=False))  # cosine decay after the peak ...
    assert lrs[-1] == pytest.approx(1e-3)  # ... down to min_lr_ratio * lr at the last step
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 9))
    assert [r["lr"] for r in logged] == lrs  # the log names the lr each step ran with


def test_resumed_run_follows_the_same_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lrs = _optimizer_lrs(monkeypatch)
    train(ToyTask(), _cfg(steps=8, warmup_steps=4, log_every=1), tmp_path / "straight")
    straight = list(lrs)
    lrs.clear()
    train(ToyTask(), _cfg(steps=8, warmup_steps=4, log_every=1), tmp_path / "split", stop_after=3)
    train(ToyTask(), _cfg(steps=8, warmup_steps=4, log_every=1), tmp_path / "split")
    assert lrs == straight and len(lrs) == 8

    def logged(run: str) -> list[tuple[int, float, float]]:
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return [(r["step"], r["lr"], r["loss"]) for r in map(json.loads, lines)]

    assert logged("split") == logged("straight")
