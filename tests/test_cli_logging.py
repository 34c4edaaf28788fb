"""Log records written while a tqdm progress bar is live (``molfusion embed``, ``predict``, ``train``,
``recommend``) are whole lines of their own: a JSON record parses, a text record starts its line."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from tqdm import tqdm
from typer.testing import CliRunner

from app.logging_setup import configure_logging


@pytest.fixture()
def restore_root_logging() -> Iterator[None]:
    """``configure_logging`` (also run by the CLI's callback) replaces the root handlers: put them back."""
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    yield
    root.handlers[:] = before[0]
    root.setLevel(before[1])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _check_record(line: str, json_lines: bool, msg: str, logger: str, extra: dict) -> None:
    if json_lines:
        record = json.loads(line)  # the whole line, nothing of the bar before or after it
        assert record["msg"] == msg and record["logger"] == logger
        assert {k: record[k] for k in extra} == extra
    else:
        fields = " ".join(f"{k}={json.dumps(v)}" for k, v in extra.items())
        assert line == f"INFO {logger}: {msg} {fields}"


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
@pytest.mark.parametrize("terminal", [False, True], ids=["file", "terminal"])
def test_records_under_a_live_bar_are_lines_of_their_own(
    monkeypatch: pytest.MonkeyPatch, restore_root_logging: None, json_lines: bool, terminal: bool
) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", json_lines)
    log = logging.getLogger("molfusion.test")
    log.info("before", extra={"i": -1})
    with tqdm(total=3, desc="working", file=sys.stderr) as bar:  # drawn on a file too (not disabled)
        for i in range(3):
            bar.update(1)
            log.info("step", extra={"i": i})
    log.info("after", extra={"i": 3})
    lines = stream.getvalue().split("\n")
    if terminal:  # what a terminal shows of each line: the text after the last carriage return
        lines = [line.rsplit("\r", 1)[-1] for line in lines]
    records = [line for line in lines if "molfusion.test" in line]
    assert len(records) == 5, stream.getvalue()
    for i, (line, msg) in enumerate(zip(records, ["before", "step", "step", "step", "after"], strict=True)):
        _check_record(line, json_lines, msg, "molfusion.test", {"i": i - 1})
    assert "working: 100%" in stream.getvalue()  # the bar itself was drawn


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
def test_embed_command_logs_stay_whole_lines_beside_its_bar(
    tiny_env,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_root_logging: None,
    json_lines: bool,
) -> None:
    """``molfusion embed`` logs "embedding pipeline started" (and a record per chunk here) while its bar
    is live; the captured stderr is no terminal, where a bar's characters stay on its line."""
    import app.commands.embed as embed_module
    from app.cli import cli
    from app.settings import get_settings

    monkeypatch.setenv("MOLFUSION_LOG_JSON", str(json_lines).lower())
    get_settings.cache_clear()
    source = tmp_path / "mols.csv"
    pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").iloc[:60].to_csv(source, index=False)
    real_stream = embed_module.smiles_stream

    def logging_stream(path: Path, column: str, chunk_size: int) -> Iterator[str]:
        for i, smiles in enumerate(real_stream(path, column, chunk_size)):
            if i % chunk_size == 0:
                logging.getLogger("molfusion.test").info("chunk read", extra={"row": i})
            yield smiles

    monkeypatch.setattr(embed_module, "smiles_stream", logging_stream)
    res = CliRunner().invoke(
        cli,  # the bar forced on: unasked, it is drawn only when stderr is a terminal
        ["embed", str(source), "-o", str(tmp_path / "out.parquet"), "--chunk-size", "20", "--progress"],
    )
    assert res.exit_code == 0, res.output
    err = res.stderr
    assert "embedding: 100%" in err  # the bar was drawn
    lines = err.split("\n")
    started = [line for line in lines if "embedding pipeline started" in line]
    assert len(started) == 1, err
    chunks = [line for line in lines if "chunk read" in line]
    assert len(chunks) == 3, err
    for i, line in enumerate(chunks):
        _check_record(line, json_lines, "chunk read", "molfusion.test", {"row": 20 * i})
    if json_lines:
        records = [line for line in lines if '"msg"' in line]
        assert len(records) >= 5  # "embedder ready", "embedding pipeline started" and the chunks
        for line in records:
            json.loads(line)
    else:
        assert started[0].startswith("INFO models.pipeline: embedding pipeline started ")
