"""All runtime configuration, read from ``MOLFUSION_*`` environment variables (and an optional ``.env``).

This is the one place settings are defined; ``docs/configuration.md`` documents every field.
Library code (``models``, ``fusion``, ``grouping``) takes explicit arguments; only ``app`` reads settings.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")  # MOLFUSION_DEVICE and the CLI's --device


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MOLFUSION_", env_file=".env", extra="ignore", env_ignore_empty=True  # empty = unset
    )

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object, info) -> object:
        """A whitespace-only variable counts as unset, as an empty one does (env_ignore_empty); not the
        API key, which is never quietly dropped."""
        if isinstance(value, str) and value and not value.strip() and info.field_name != "api_key":
            return cls.model_fields[info.field_name].default
        return value

    # --- data and models ---
    data_dir: Path = Field(
        default=_REPO_DATA, description="Catalog / benchmark data folder (the MANIFEST.tsv folder)."
    )
    heads_dir: Path | None = Field(
        default=None, description="Head registry folder; default: the heads shipped in the package."
    )
    smiles_encoder_dir: Path | None = Field(
        default=None, description="SMILES-transformer checkpoint folder; default: the built-in one."
    )
    graph_encoder_dir: Path | None = Field(
        default=None, description="Graph-encoder checkpoint folder; default: the built-in one."
    )
    device: str = Field(default="auto", description="'auto' (cuda when present), 'cpu', 'cuda', 'cuda:N'.")
    batch_size: int = Field(default=256, ge=1, description="Molecules per encoder forward pass.")
    featurize_workers: int = Field(
        default=0, ge=0, description="Processes for featurization of large inputs; 0 = all cores."
    )

    # --- input validation ---
    max_smiles_length: int = Field(default=1000, ge=1, description="Longer SMILES are rejected per item.")
    max_atoms: int = Field(default=200, ge=1, description="Molecules with more heavy atoms are rejected.")
    salt_policy: Literal["largest", "reject", "keep"] = Field(
        default="largest",
        description="Disconnected SMILES: keep the largest fragment, reject, or keep all fragments.",
    )

    # --- embedding cache ---
    redis_url: str | None = Field(
        default=None,
        description="Redis URL; unset = in-process LRU cache (and in-process jobs unless jobs_redis_url).",
    )
    jobs_redis_url: str | None = Field(
        default=None,
        description=(
            "Redis for recommendation jobs and their queue; unset = redis_url. Set it to keep jobs out of "
            "an evicting (allkeys-lru) cache instance."
        ),
    )
    cache_max_items: int = Field(default=200_000, ge=0, description="In-process LRU capacity (vectors).")
    cache_ttl_s: int | None = Field(default=None, ge=1, description="Redis TTL for cached vectors.")
    cache_dtype: Literal["float16", "float32"] = Field(default="float16", description="Stored precision.")
    redis_timeout_s: float = Field(default=0.25, gt=0, description="Socket timeout for cache calls.")
    redis_retry_s: float = Field(default=2.0, gt=0, description="Seconds before retrying a down Redis.")
    cache_namespace: str = Field(
        default="", description="Prefix of every Redis key (to share one Redis DB between deployments)."
    )

    # --- service ---
    host: str = Field(default="127.0.0.1", description="Bind address of `molfusion serve`.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of `molfusion serve`.")
    workers: int = Field(default=1, ge=1, description="Uvicorn worker processes.")
    api_key: str | None = Field(default=None, description="When set, every /v1/* call needs X-API-Key.")
    shutdown_grace_s: int = Field(
        default=10,
        ge=0,
        description=(
            "On SIGTERM, seconds `molfusion serve` lets in-flight requests finish before closing them "
            "(keep the orchestrator's stop grace period above it; docker-compose.yml gives the api 30 s)."
        ),
    )
    max_molecules_per_request: int = Field(default=1000, ge=1, description="413 above this.")
    max_request_bytes: int = Field(default=2_000_000, ge=1024, description="413 above this body size.")
    microbatch_max_size: int = Field(default=512, ge=1, description="Dynamic micro-batcher batch cap.")
    microbatch_max_wait_ms: float = Field(default=2.0, ge=0, description="Micro-batcher max wait.")
    memo_items: int = Field(
        default=100_000, ge=0,
        description=(
            "Service memos: remembered SMILES validations, head outputs and serialized /v1/predict items "
            "(one unit per head per molecule; 0 = off, which also turns off the predict fast path)."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Log level for structured (JSON) logs (any case)."
    )
    log_json: bool = Field(default=True, description="Emit one JSON object per log line.")

    # --- recommendation jobs ---
    upload_min_rows: int = Field(default=50, ge=1, description="Fewer valid rows are rejected (422).")
    upload_max_rows: int = Field(default=100_000, ge=1, description="More rows are rejected (413).")
    upload_max_bytes: int = Field(default=20_000_000, ge=1024, description="Larger uploads -> 413.")
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="How long job results are kept.")
    job_timeout_s: int = Field(default=3600, ge=10, description="A job running longer is failed.")
    catalog_extra: Path | None = Field(
        default=None, description="JSON file of user-registered catalog sets (default: in heads_dir)."
    )
    grouping_cache_dir: Path | None = Field(
        default=None, description="Cached catalog embeddings (default: ~/.cache/molfusion/grouping)."
    )
    recommend_max_aux_rows: int = Field(
        default=2000,
        ge=50,
        description="Catalog sets larger than this are subsampled (seeded) per recommendation.",
    )
    recommend_evidence_seeds: int = Field(
        default=3, ge=0, description="Model seeds for the target-alone vs. target+group evidence (0 = none)."
    )
    recommend_aux_weight: float = Field(
        default=1.0,
        gt=0,
        description="Loss share of the auxiliary group vs. the target (1) when evidence heads train.",
    )
    recommend_transfer: Literal["joint", "finetune"] = Field(
        default="finetune",
        description="How evidence heads train with the group: joint, or joint then fine-tuned on the target.",
    )
    recommend_routing_repeats: int = Field(
        default=1,
        ge=1,
        le=20,
        description="molgroup routing runs (seeds) whose gates are averaged before the group is chosen.",
    )
    recommend_structure_prior: float = Field(
        default=1.0,
        ge=0,
        le=5,
        description="Weight of the fingerprint-similarity prior on the molgroup gate (0 = plain routing).",
    )
    job_lease_s: int = Field(
        default=30, ge=3, description="A running job whose worker sent no heartbeat for this long is failed."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("redis_url", "jobs_redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # an empty variable means unset
        if not re.match(r"(redis|rediss|unix)://", value):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:
            urlsplit(value).port  # noqa: B018 (parsing it raises on a port that is no number or out of range)
        except ValueError as exc:
            raise ValueError(f"has an invalid port: {exc}") from None
        return value

    @property
    def jobs_redis(self) -> str | None:
        """The Redis that holds recommendation jobs: ``jobs_redis_url``, else ``redis_url``."""
        return self.jobs_redis_url or self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_error_text(exc: ValidationError) -> str:
    """One line per invalid setting, named by its environment variable, with the value it had."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        given = error.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"MOLFUSION_{field.upper()}: {error['msg']}{shown}")
    return "\n".join(lines)


def settings_markdown() -> str:
    """The configuration reference (docs/configuration.md is this text; a test keeps them equal)."""
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable with the `MOLFUSION_` prefix (also read from a `.env` file",
        "in the working directory). This file is generated from `app/settings.py` by",
        "`python -m app.settings > docs/configuration.md`; a test keeps the two in step.",
        "",
        "| variable | default | description |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(built-in)" if name == "data_dir" else ("unset" if default is None else f"`{default}`")
        lines.append(f"| `MOLFUSION_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
