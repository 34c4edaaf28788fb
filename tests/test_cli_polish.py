"""CLI polish: progress bars only on a terminal unless forced (``--progress/--no-progress``), Python
warnings and library loggers through the structured log handler, one check for repeated ``--targets``,
and the training table parsed once."""

from __future__ import annotations

import gzip
import io
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from tqdm import tqdm
from typer.testing import CliRunner

from app.logging_setup import configure_logging
from fusion.training import LabelTableError, read_label_table
from grouping.target import TargetError, parse_target
from models.progress import bar_disable
from models.tabular import repeated_names, repeated_targets


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    """``configure_logging`` (also run by the CLI's callback) replaces the root handlers and captures
    warnings: undo both (warnings capture reset first, in case an earlier test left it half-undone)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.captureWarnings(False)
    yield
    logging.captureWarnings(False)
    root.handlers[:] = handlers
    root.setLevel(level)


# --- 1. progress bars -------------------------------------------------------------------------------


def _command(path: list[str]):
    from app.cli import cli

    command = typer.main.get_command(cli)
    for name in path:
        command = command.commands[name]  # a group's sub-commands
    return command


@pytest.mark.parametrize(
    "path",
    [["embed"], ["predict"], ["train"], ["recommend"], ["pretrain", "smiles"], ["pretrain", "graph"]],
    ids=" ".join,
)
def test_every_command_with_a_bar_has_the_progress_option(path: list[str]) -> None:
    (param,) = [p for p in _command(path).params if p.name == "progress"]
    assert param.opts == ["--progress"] and param.secondary_opts == ["--no-progress"]
    assert param.default is None  # unset: the terminal decides


@pytest.mark.parametrize(
    ("progress", "terminal", "drawn"),
    [(None, True, True), (None, False, False), (True, False, True), (False, True, False)],
)
def test_bars_are_drawn_on_a_terminal_unless_forced(
    progress: bool | None, terminal: bool, drawn: bool
) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    with tqdm(total=2, desc="working", file=stream, disable=bar_disable(progress)) as bar:
        bar.update(2)
    assert ("working: 100%" in stream.getvalue()) is drawn


def test_embed_and_train_draw_no_bar_off_a_terminal_unless_asked(
    tiny_env, data_dir: Path, tmp_path: Path, restore_logging: None
) -> None:
    """CliRunner's stderr is no terminal, as a file, a pipe or ``docker logs`` is not."""
    from app.cli import cli

    source = tmp_path / "mols.csv"
    frame = pd.read_csv(data_dir / "moleculenet" / "bbbp.csv").iloc[:80][["smiles", "p_np"]]
    frame.to_csv(source, index=False)
    embed = ["embed", str(source), "-o", str(tmp_path / "out.parquet")]
    res = CliRunner().invoke(cli, embed)
    assert res.exit_code == 0, res.output
    assert "embedding:" not in res.stderr and "\r" not in res.stderr, res.stderr
    res = CliRunner().invoke(cli, [*embed, "--progress"])
    assert res.exit_code == 0 and "embedding: 100%" in res.stderr, res.stderr
    train = ["train", str(source), "--targets", "p_np", "--seeds", "1", "--param", "epochs=2"]
    res = CliRunner().invoke(cli, [*train, "--out", str(tmp_path / "head")])
    assert res.exit_code == 0, res.output
    assert "embedding:" not in res.stderr and "training mlp" not in res.stderr, res.stderr
    res = CliRunner().invoke(cli, [*train, "--out", str(tmp_path / "head2"), "--progress"])
    assert res.exit_code == 0, res.output
    assert "embedding: 100%" in res.stderr and "training mlp/concat: 100%" in res.stderr, res.stderr


# --- 2. warnings and library loggers ---------------------------------------------------------------


def test_a_warning_is_one_json_line(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", json_lines=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("polish: something is off", UserWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, stream.getvalue()
    record = json.loads(lines[0])
    assert record["level"] == "warning" and record["logger"] == "py.warnings"
    assert "UserWarning: polish: something is off" in record["msg"]


@pytest.mark.parametrize("library", ["transformers", "huggingface_hub", "rdkit"])
def test_a_library_console_handler_prints_nothing_raw(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None, library: str
) -> None:
    """What transformers, huggingface_hub and rdkit do when imported: a plain stderr handler on their top
    logger and (transformers, rdkit) no propagation. Once routed, a record is one JSON line."""
    from models.library_logs import route_library_logs

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", json_lines=True)
    top = logging.getLogger(library)
    own = logging.StreamHandler(stream)
    top.addHandler(own)
    top.propagate = False
    try:
        route_library_logs()  # what the modules importing transformers do next
        logging.getLogger(f"{library}.some_module").warning("weights not initialised")
    finally:
        top.removeHandler(own)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, stream.getvalue()  # not silenced, not printed twice, not raw
    record = json.loads(lines[0])
    assert record["logger"] == f"{library}.some_module" and record["msg"] == "weights not initialised"


def test_transformers_logs_through_the_root_once_the_encoder_module_is_imported() -> None:
    """The CLI configures logging first and imports the encoders (and so transformers, which then adds
    its own console handler) inside a command: in a fresh process, as there."""
    code = (
        "from app.logging_setup import configure_logging\n"
        "configure_logging('INFO', json_lines=True)\n"
        "import models.smiles_encoder\n"
        "from transformers.utils import logging as tf_logging\n"
        "tf_logging.get_logger('transformers.modeling_utils').warning('weights not initialised')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    record = json.loads(lines[0])
    assert record["logger"] == "transformers.modeling_utils" and record["msg"] == "weights not initialised"


# --- 3. repeated --targets -------------------------------------------------------------------------


def test_repeated_targets_is_one_check_for_both_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert repeated_targets(["y", "x", "y", "z", "x", "y"]) == ["x", "y"]
    assert repeated_targets(["y", "x"]) == []
    assert repeated_names(["smiles", "y", "", "", "y"]) == ["y"]  # empty header cells are no names
    calls: list[list[str]] = []

    def spy(targets: list[str]) -> list[str]:
        calls.append(list(targets))
        return repeated_targets(targets)

    monkeypatch.setattr("models.tabular.repeated_targets", spy)  # read_label_table imports it when run
    monkeypatch.setattr("grouping.target.repeated_targets", spy)
    csv = tmp_path / "t.csv"
    csv.write_text("smiles,y\nCCO,1\n")
    twice = r"^target column\(s\) \['y'\] named more than once \(--targets\)$"
    with pytest.raises(LabelTableError, match=twice):
        read_label_table(csv, ["y", "y"], None)
    frame = pd.DataFrame({"smiles": ["CCO"], "y": ["1"]})
    with pytest.raises(TargetError, match=r"^label column\(s\) \['y'\] named more than once$") as err:
        parse_target(frame, "t", targets=["y", "y"])
    assert err.value.field == "targets"
    assert calls == [["y", "y"], ["y", "y"]]


# --- 4. the training table read once ---------------------------------------------------------------


@pytest.fixture()
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    reads: list[object] = []
    real = pd.read_csv

    def counting(*args, **kwargs):
        reads.append(args[0] if args else kwargs.get("filepath_or_buffer"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", counting)
    return reads


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_label_table_is_read_once(tmp_path: Path, count_reads: list[object], suffix: str) -> None:
    # no well-known SMILES column name: detected on the sample; a blank line still counts as a line
    text = "\ufeffstructure, y ,z,\nCCO,1.5,0,\n\nc1ccccc1,nan,1,\nCCN,,0,\n"
    path = tmp_path / f"t{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    smiles, y, column = read_label_table(path, [" y ", "z"], None)
    assert len(count_reads) == 1
    assert column == "structure" and smiles == ["CCO", "c1ccccc1", "CCN"]
    np.testing.assert_array_equal(y, np.array([[1.5, 0], [np.nan, 1], [np.nan, 0]], dtype=np.float32))
    bad = tmp_path / f"bad{suffix}"
    rows = "smiles,y\nCCO,1\n\nCC,high\n"
    bad.write_bytes(gzip.compress(rows.encode()) if suffix.endswith(".gz") else rows.encode())
    with pytest.raises(LabelTableError, match=r"column 'y' row 4 \(line in file\): label 'high'"):
        read_label_table(bad, ["y"], None)
    assert len(count_reads) == 2


def test_label_table_header_problems_keep_their_messages(tmp_path: Path) -> None:
    def table(text: str) -> Path:
        path = tmp_path / "t.csv"
        path.write_text(text)
        return path

    with pytest.raises(LabelTableError, match=r"column name\(s\) \['y'\] occur more than once in the header"):
        read_label_table(table("smiles,y, y\nCCO,1,0\n"), ["y"], None)
    with pytest.raises(LabelTableError, match=r"column 'mol' not in t.csv \(columns: \['smiles', 'y'\]\)"):
        read_label_table(table("smiles,y\nCCO,1\n"), ["y"], "mol")
    with pytest.raises(LabelTableError, match=r"target column\(s\) \['q'\] not in t.csv"):
        read_label_table(table("smiles,y,,\nCCO,1,,\n"), ["q"], None)
    with pytest.raises(LabelTableError, match="has a header but no data rows"):
        read_label_table(table("smiles,y\n\n"), ["y"], None)
    with pytest.raises(LabelTableError, match="is not a readable CSV: No columns to parse"):
        read_label_table(table(""), ["y"], None)
    # a data row longer than the header: named, where it was read shifted by a column and crashed
    with pytest.raises(LabelTableError, match="Expected 2 fields in line 2, saw 3"):
        read_label_table(table("smiles,y\nCCO,1,2\n"), ["y"], None)
    smiles, y, _ = read_label_table(table("smiles,y,,\nCCO,1,,\nCC,0,,\n"), ["y"], None)  # Excel's commas
    assert smiles == ["CCO", "CC"] and y[:, 0].tolist() == [1.0, 0.0]
