"""Shared fixtures: the real data folder and tiny random-init encoders (fast on 2 CPU cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
# Keys molfusion writes to Redis (jobs, queue, embedding cache) and those of its job queue library, arq.
OWN_REDIS_PREFIXES = (b"molfusion:", b"arq:")


def _data_dir() -> Path:
    env = os.environ.get("MOLFUSION_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = _data_dir()
    if not (path / "MANIFEST.tsv").exists():
        pytest.skip(f"real data sets not found at {path} (set MOLFUSION_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def bbbp_smiles(data_dir: Path) -> list[str]:
    return pd.read_csv(data_dir / "moleculenet" / "bbbp.csv")["smiles"].tolist()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory, bbbp_smiles: list[str]) -> dict[str, Path]:
    """Random-init tiny SMILES and graph encoders saved as real checkpoint folders."""
    import torch

    from models.graph_encoder import GraphEncoder, GraphEncoderConfig
    from models.smiles_encoder import MolFormerConfig, MolFormerModel, save_smiles_encoder
    from models.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    tokenizer = build_tokenizer(bbbp_smiles)
    config = MolFormerConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    save_smiles_encoder(MolFormerModel(config), tokenizer, root / "smiles", name="tiny-molformer")
    GraphEncoder(GraphEncoderConfig(hidden_size=16, num_layers=2)).save(root / "graph", name="tiny-gin")
    return {"smiles": root / "smiles", "graph": root / "graph"}


@pytest.fixture(scope="session")
def tiny_embedder(tiny_checkpoints: dict[str, Path]):
    from models.embedder import Embedder

    return Embedder(tiny_checkpoints["smiles"], tiny_checkpoints["graph"], device="cpu", batch_size=64)


@pytest.fixture()
def tiny_env(
    tiny_checkpoints: dict[str, Path], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Settings pointing at the tiny encoders, the real data folder and a fresh heads folder."""
    from app.settings import get_settings

    monkeypatch.setenv("MOLFUSION_SMILES_ENCODER_DIR", str(tiny_checkpoints["smiles"]))
    monkeypatch.setenv("MOLFUSION_GRAPH_ENCODER_DIR", str(tiny_checkpoints["graph"]))
    monkeypatch.setenv("MOLFUSION_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MOLFUSION_HEADS_DIR", str(tmp_path / "heads"))
    monkeypatch.setenv("MOLFUSION_DEVICE", "cpu")
    monkeypatch.delenv("MOLFUSION_REDIS_URL", raising=False)
    monkeypatch.delenv("MOLFUSION_API_KEY", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _clear_own_keys(client, db: int) -> None:
    """Delete molfusion's and arq's keys in ``db``; fail, touching nothing, if it holds anything else."""
    keys = list(client.scan_iter(count=1000))
    foreign = [k for k in keys if not k.startswith(OWN_REDIS_PREFIXES)]
    if foreign:
        pytest.fail(f"Redis database {db} at 127.0.0.1:6379 holds {len(foreign)} keys that are not "
                    f"molfusion's (e.g. {foreign[0]!r}); the tests use it only when it is empty or holds "
                    "molfusion's keys, so nothing of yours is deleted. Empty it or free that database.")
    if keys:
        client.delete(*keys)


@pytest.fixture()
def own_redis_db():
    """``claim(db) -> redis.Redis``: a database of the local Redis for one test, cleared of molfusion's
    keys before and after; a database holding other keys makes the test fail instead of being flushed."""
    import redis

    claimed = []

    def claim(db: int):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=5)
        client.ping()
        _clear_own_keys(client, db)
        claimed.append((client, db))
        return client

    yield claim
    for client, db in claimed:
        _clear_own_keys(client, db)
        client.close()
