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


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MOLFUSION_PORT", "abc", "MOLFUSION_PORT: Input should be a valid integer"),
        ("MOLFUSION_LOG_LEVEL", "VERBOSE", "MOLFUSION_LOG_LEVEL: Input should be 'DEBUG'"),
        ("MOLFUSION_REDIS_URL", "foo://bar", "MOLFUSION_REDIS_URL: Value error, must start with redis://"),
        ("MOLFUSION_JOBS_REDIS_URL", "localhost:6379", "MOLFUSION_JOBS_REDIS_URL: Value error"),
        ("MOLFUSION_DEVICE", "tpu", "MOLFUSION_DEVICE: Value error, must be 'auto', 'cpu'"),
        ("MOLFUSION_REDIS_URL", "redis://127.0.0.1:abc/0", "MOLFUSION_REDIS_URL: Value error, has an"),
        ("MOLFUSION_BATCH_SIZE", "-5", "MOLFUSION_BATCH_SIZE: Input should be greater than or equal to 1"),
    ],
)
def test_cli_names_an_invalid_variable_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    from typer.testing import CliRunner

    from app.cli import cli
    from app.settings import get_settings

    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["heads"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert message in result.output and f"(got {value!r})" in result.output
    assert "Traceback" not in result.output


def test_empty_variables_mean_unset_and_log_level_ignores_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLFUSION_CACHE_TTL_S", "")
    monkeypatch.setenv("MOLFUSION_REDIS_URL", "")
    monkeypatch.setenv("MOLFUSION_LOG_LEVEL", "debug")
    monkeypatch.setenv("MOLFUSION_PORT", "  ")  # whitespace only: unset too
    monkeypatch.setenv("MOLFUSION_API_KEY", " ")  # but a key is never dropped quietly
    s = Settings()
    assert s.cache_ttl_s is None and s.redis_url is None and s.log_level == "DEBUG"
    assert s.port == 8000 and s.api_key == " "


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


def test_text_logs_carry_the_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from app.logging_setup import configure_logging

    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    try:
        configure_logging("INFO", json_lines=False)
        extra = {"head": "odd", "reason": "bad card"}
        logging.getLogger("molfusion.test").warning("head skipped", extra=extra)
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
    assert 'WARNING molfusion.test: head skipped head="odd" reason="bad card"' in capsys.readouterr().err
