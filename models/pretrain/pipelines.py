"""The two pretraining pipelines end to end: corpus file -> tokens / graphs -> training -> encoder folder.

Output folder layout (``out``): ``state/`` (resumable checkpoint, pretraining heads included),
``log.jsonl`` (one line per ``log_every`` steps), ``data.json`` (corpus counts and preparation time),
``tokenizer/`` (SMILES only: built once from the corpus, reused on resume) and ``encoder/`` (the
shipped encoder, fp16 safetensors, no heads; rewritten at every checkpoint).

``before_train`` runs once the data is on the device and before the first step (the GPU script uses
it to start both pipelines' timed training together when they share one GPU).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from models.checkpoint import file_sha256
from models.embedder import device_description, resolve_device
from models.pretrain.corpus import CORPUS_COLUMN, read_corpus
from models.pretrain.trainer import Position, TrainConfig, check_resumable, has_checkpoint, train

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"
DATA_FILE = "data.json"


def _write_data_info(out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / DATA_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _run_identity(corpus: Path, smiles_column: str, limit: int | None, model_overrides: dict | None) -> dict:
    """What a resume must find unchanged besides the TrainConfig (``trainer.RUN_IDENTITY``): the corpus
    (name, content digest and the column read), the row limit and the model shape."""
    return {"corpus": corpus.name, "corpus_sha256": file_sha256(corpus), "smiles_column": smiles_column,
            "limit": limit, "model": model_overrides or {}}


def _require_valid_smiles(corpus: Path, smiles: list[str], sample: int = 1000) -> None:
    """A SMILES corpus must hold SMILES: at least one valid among the first ``sample`` (the MLM itself
    would learn any text)."""
    from models.chemistry import parse_smiles

    if not any(parse_smiles(s).error is None for s in smiles[:sample]):
        raise ValueError(f"{corpus}: none of its first {min(sample, len(smiles))} entries is a valid SMILES")


def pretrain_smiles(
    corpus: Path,
    out: Path,
    cfg: TrainConfig,
    model_overrides: dict | None = None,
    device: str = "auto",
    max_seconds: float | None = None,
    stop_after: int | None = None,
    limit: int | None = None,
    before_train: Callable[[], None] | None = None,
    smiles_column: str = CORPUS_COLUMN,
    progress: bool | None = None,
) -> Position:
    """MLM-pretrain the SMILES transformer on column ``smiles_column`` of ``corpus``; resumes when ``out``
    holds a checkpoint. ``progress``: the console progress bar (``None``: when stderr is a terminal)."""
    from models.pretrain.smiles_mlm import SmilesMLMTask, tokenize_corpus
    from models.smiles_encoder import MolFormerConfig, count_parameters
    from models.tokenizer import build_tokenizer, load_tokenizer

    dev = resolve_device(device)
    identity = _run_identity(corpus, smiles_column, limit, model_overrides)
    check_resumable(out, cfg, identity)
    t0 = time.monotonic()
    smiles = read_corpus(corpus, column=smiles_column, limit=limit)
    _require_valid_smiles(corpus, smiles)
    tok_dir = out / TOKENIZER_DIR
    if has_checkpoint(out) and (tok_dir / "tokenizer.json").exists():  # the run's own vocabulary
        tokenizer = load_tokenizer(tok_dir)
    else:  # a new run: built from this corpus (a failed earlier attempt's tokenizer is not reused)
        tokenizer = build_tokenizer(smiles)
        tokenizer.save_pretrained(str(tok_dir))
    config = MolFormerConfig(vocab_size=len(tokenizer), **(model_overrides or {}))
    tokens = tokenize_corpus(smiles, tokenizer, config.max_position_embeddings)
    prep_s = time.monotonic() - t0
    torch.manual_seed(cfg.seed)  # initial weights depend on the seed alone
    task = SmilesMLMTask(config, tokenizer, tokens, dev, name="molformer-moses")
    n_params = count_parameters(task.model.molformer)
    _write_data_info(out, {"corpus": str(corpus), "molecules": len(tokens), "vocab_size": len(tokenizer),
                           "max_tokens": int(tokens.lengths.max()),
                           "mean_tokens": float(tokens.lengths.float().mean()),
                           "prepare_s": round(prep_s, 1), "encoder_parameters": n_params,
                           "device": device_description(dev)["name"]})
    log.info("smiles corpus ready", extra={"molecules": len(tokens), "seconds": round(prep_s, 1),
                                           "parameters": n_params})
    meta = {"objective": "masked language modelling 15% (80/10/10)", "corpus": corpus.name,
            "corpus_molecules": len(tokens), "batch_size": cfg.batch_size, "train_config": asdict(cfg),
            **identity}
    if before_train is not None:
        before_train()
    return train(task, cfg, out, max_seconds=max_seconds, stop_after=stop_after,
                 export_dir=out / ENCODER_DIR, meta=meta, progress=progress)


def pretrain_graph(
    corpus: Path,
    out: Path,
    cfg: TrainConfig,
    model_overrides: dict | None = None,
    device: str = "auto",
    max_seconds: float | None = None,
    stop_after: int | None = None,
    limit: int | None = None,
    workers: int = 0,
    before_train: Callable[[], None] | None = None,
    motifs: bool = True,
    smiles_column: str = CORPUS_COLUMN,
    progress: bool | None = None,
) -> Position:
    """Self-supervised pretraining of the graph encoder on column ``smiles_column`` of ``corpus``;
    resumes from ``out``. ``progress``: the console progress bar (``None``: when stderr is a terminal).

    Objectives: masked atom and bond attributes, plus (``motifs=True``) functional-group presence
    predicted from the molecule embedding (``models.pretrain.motifs``).
    """
    from models.graph_encoder import GraphEncoderConfig
    from models.pretrain.graph_ssl import GraphCorpus, GraphMaskingTask
    from models.pretrain.motifs import graphs_and_motifs
    from models.smiles_encoder import count_parameters

    dev = resolve_device(device)
    identity = {**_run_identity(corpus, smiles_column, limit, model_overrides), "motifs": motifs}
    check_resumable(out, cfg, identity)
    t0 = time.monotonic()
    smiles = read_corpus(corpus, column=smiles_column, limit=limit)
    graphs, labels = graphs_and_motifs(smiles, workers=workers, motifs=motifs)  # one parse per SMILES
    if not graphs:
        raise ValueError(f"{corpus}: none of its {len(smiles)} SMILES is valid")
    data = GraphCorpus.from_graphs(graphs)
    del graphs
    motif_matrix = None if labels is None else torch.from_numpy(labels)
    prep_s = time.monotonic() - t0
    config = GraphEncoderConfig(**(model_overrides or {}))
    torch.manual_seed(cfg.seed)
    task = GraphMaskingTask(config, data, dev, name="mhg-gin-moses", motifs=motif_matrix)
    n_params = count_parameters(task.model.encoder)
    _write_data_info(out, {"corpus": str(corpus), "molecules": len(data), "invalid": len(smiles) - len(data),
                           "atoms": int(data.x.shape[0]), "directed_bonds": int(data.edge_attr.shape[0]),
                           "motifs": 0 if motif_matrix is None else int(motif_matrix.shape[1]),
                           "motif_positive_rate": None if motif_matrix is None
                           else round(float(motif_matrix.float().mean()), 4),
                           "prepare_s": round(prep_s, 1), "encoder_parameters": n_params,
                           "device": device_description(dev)["name"]})
    log.info("graph corpus ready", extra={"molecules": len(data), "seconds": round(prep_s, 1),
                                          "parameters": n_params})
    objective = "masked atom and bond attributes 15%"
    if motif_matrix is not None:
        objective += f" + presence of {motif_matrix.shape[1]} RDKit functional-group motifs (BCE, readout)"
    meta = {"objective": objective, "corpus": corpus.name,
            "corpus_molecules": len(data), "batch_size": cfg.batch_size, "train_config": asdict(cfg),
            **identity}
    if before_train is not None:
        before_train()
    return train(task, cfg, out, max_seconds=max_seconds, stop_after=stop_after,
                 export_dir=out / ENCODER_DIR, meta=meta, progress=progress)

