"""The one place an :class:`~models.embedder.Embedder` is built from settings (CLI, service, jobs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from models.chemistry import ParsePolicy
    from models.embedder import Embedder
    from models.embedding_cache import VectorCache


def parse_policy(settings: Settings | None = None) -> ParsePolicy:
    """The SMILES validation policy of ``settings`` (no encoders loaded: for checking input early)."""
    from models.chemistry import ParsePolicy

    s = settings or get_settings()
    return ParsePolicy(
        max_smiles_length=s.max_smiles_length, max_atoms=s.max_atoms, salt_policy=s.salt_policy
    )


def build_embedder(settings: Settings | None = None, cache: VectorCache | None = None) -> Embedder:
    """The embedder configured from ``settings`` (default: the process-wide settings), with ``cache``."""
    from models.embedder import Embedder

    s = settings or get_settings()
    policy = parse_policy(s)
    return Embedder(
        s.smiles_encoder_dir,
        s.graph_encoder_dir,
        device=s.device,
        batch_size=s.batch_size,
        policy=policy,
        cache=cache,
        featurize_workers=s.featurize_workers,
    )
