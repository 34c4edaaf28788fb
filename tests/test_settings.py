"""Settings: every field documented in docs/configuration.md, env vars read with the MOLFUSION_ prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, settings_markdown

REPO = Path(__file__).resolve().parent.parent


def test_configuration_doc_is_generated_from_settings() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == settings_markdown(), "regenerate with: python -m app.settings > docs/configuration.md"
    for name, field in Settings.model_fields.items():
        assert f"`MOLFUSION_{name.upper()}`" in doc
        assert field.description, f"setting {name} has no description"


def test_env_vars_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLFUSION_MAX_ATOMS", "77")
    monkeypatch.setenv("MOLFUSION_REDIS_URL", "redis://127.0.0.1:6379/5")
    s = Settings()
    assert s.max_atoms == 77 and s.redis_url == "redis://127.0.0.1:6379/5"


def test_invalid_setting_is_rejected_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLFUSION_PORT", "not-a-port")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_recommend_transfer_reaches_the_recommendation_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.jobs import recommendation_options

    assert recommendation_options(Settings(), "molgroup").transfer == "finetune"
    monkeypatch.setenv("MOLFUSION_RECOMMEND_TRANSFER", "joint")
    assert recommendation_options(Settings(), "structure").transfer == "joint"
    monkeypatch.setenv("MOLFUSION_RECOMMEND_TRANSFER", "sequential")
    with pytest.raises(ValueError, match="recommend_transfer"):
        Settings()


def test_recommend_routing_settings_reach_the_routing_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.jobs import recommendation_options

    routing = recommendation_options(Settings(), "molgroup").routing
    assert routing.repeats == 1 and routing.structure_prior == 1.0  # docs/bench_grouping.md, sixth session
    monkeypatch.setenv("MOLFUSION_RECOMMEND_ROUTING_REPEATS", "4")
    monkeypatch.setenv("MOLFUSION_RECOMMEND_STRUCTURE_PRIOR", "0")
    routing = recommendation_options(Settings(), "molgroup").routing
    assert routing.repeats == 4 and routing.structure_prior == 0.0
    monkeypatch.setenv("MOLFUSION_RECOMMEND_ROUTING_REPEATS", "0")
    with pytest.raises(ValueError, match="recommend_routing_repeats"):
        Settings()
    monkeypatch.setenv("MOLFUSION_RECOMMEND_ROUTING_REPEATS", "1")
    monkeypatch.setenv("MOLFUSION_RECOMMEND_STRUCTURE_PRIOR", "-1")
    with pytest.raises(ValueError, match="recommend_structure_prior"):
        Settings()
