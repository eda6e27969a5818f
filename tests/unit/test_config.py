"""Configuration: precedence, validation messages, redaction; generated secrets file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fleetsim.kernel.config import FleetsimConfig, load_config, secret
from fleetsim.kernel.errors import ConfigError
from fleetsim.stack.secrets import ensure_secrets, password_keys


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_defaults_file_secrets_env_overrides(tmp_path: Path) -> None:
    toml = _write(
        tmp_path / "fleetsim.toml",
        '[stack]\nrun_dir = "run"\n[mqtt]\nport = 1111\nkeepalive_s = 40\n'
        '[postgres]\nport = 2222\ndatabase = "fromfile"\n[kafka]\npartitions = 3\n',
    )
    (tmp_path / "run").mkdir()
    _write(
        tmp_path / "run" / "secrets.env",
        "FLEETSIM_MQTT__PORT=3333\nFLEETSIM_POSTGRES__PORT=3333\nFLEETSIM_MQTT__SIM_PASSWORD=from-secrets\n",
    )
    env = {"FLEETSIM_POSTGRES__PORT": "4444", "FLEETSIM_KAFKA__PARTITIONS": "5", "UNRELATED": "x"}
    cfg = load_config(toml, environ=env, overrides={"kafka.partitions": 6})
    assert cfg.mqtt.keepalive_s == 40  # file over default
    assert cfg.postgres.database == "fromfile"
    assert cfg.mqtt.port == 3333  # secrets file over file
    assert cfg.postgres.port == 4444  # env over secrets file
    assert cfg.kafka.partitions == 6  # overrides over env
    assert cfg.mqtt.qos == 1  # untouched default
    assert secret(cfg.mqtt.sim_password, "mqtt.sim_password") == "from-secrets"
    assert cfg.run_dir == tmp_path / "run"  # relative to the config file


def test_unknown_key_names_the_allowed_keys(tmp_path: Path) -> None:
    toml = _write(tmp_path / "fleetsim.toml", "[mqtt]\nprot = 1883\n")
    with pytest.raises(ConfigError) as exc:
        load_config(toml, environ={})
    msg = str(exc.value)
    assert "unknown key mqtt.prot" in msg and "port" in msg and "keepalive_s" in msg


def test_unknown_env_key_and_section_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"FLEETSIM_KAFKA__PARTITION.*allowed in \[kafka\].*partitions"):
        load_config(None, environ={"FLEETSIM_KAFKA__PARTITION": "3"}, cwd=Path("/nonexistent-dir"))
    with pytest.raises(ConfigError, match="unknown section 'kafak'; allowed: stack, mqtt, kafka"):
        load_config(None, environ={"FLEETSIM_KAFAK__PARTITIONS": "3"}, cwd=Path("/nonexistent-dir"))


def test_bad_literal_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as exc:
        FleetsimConfig().with_overrides({"postgres.sslmode": "sometimes"})
    msg = str(exc.value)
    assert "postgres.sslmode" in msg and "'sometimes'" in msg
    for allowed in ("disable", "require", "verify-full"):
        assert allowed in msg


def test_out_of_range_value_names_key_and_bound() -> None:
    with pytest.raises(ConfigError, match=r"kafka.partitions.*greater than or equal to 1.*got 0"):
        FleetsimConfig().with_overrides({"kafka.partitions": 0})


def test_redacted_masks_every_secret_and_nothing_else() -> None:
    cfg = FleetsimConfig().with_overrides(
        {"postgres.admin_password": "pg-s3cret", "mqtt.tool_password": "mq-s3cret"}
    )
    red = cfg.redacted()
    text = json.dumps(red)
    assert "pg-s3cret" not in text and "mq-s3cret" not in text
    assert red["postgres"]["admin_password"] == "********"
    assert red["mqtt"]["tool_password"] == "********"
    assert red["postgres"]["reader_password"] is None  # unset stays visible as unset
    assert red["postgres"]["admin_user"] == "fleetsim_admin"
    assert "pg-s3cret" not in repr(cfg) and "pg-s3cret" not in str(cfg)


def test_ensure_secrets_generates_once_private_and_reused(tmp_path: Path) -> None:
    cfg = FleetsimConfig().with_overrides({"stack.run_dir": str(tmp_path / "run")})
    filled = ensure_secrets(cfg)
    keys = password_keys(cfg)
    assert "postgres.admin_password" in keys and "kafka.stream_password" in keys
    values = {}
    for dotted in keys:
        section, _, key = dotted.partition(".")
        value = getattr(getattr(filled, section), key)
        assert value is not None, dotted
        values[dotted] = value.get_secret_value()
        assert len(values[dotted]) >= 32
    assert len(set(values.values())) == len(values)  # every one distinct
    path = cfg.secrets_file
    assert path.stat().st_mode & 0o777 == 0o600
    lines = path.read_text().splitlines()
    assert "FLEETSIM_POSTGRES__ADMIN_PASSWORD=" + values["postgres.admin_password"] in lines
    mtime = path.stat().st_mtime_ns
    again = ensure_secrets(cfg)  # re-run: same values, file untouched
    assert again.postgres.admin_password == filled.postgres.admin_password
    assert path.stat().st_mtime_ns == mtime
    # And load_config reads them back through the file.
    loaded = load_config(None, environ={"FLEETSIM_STACK__RUN_DIR": str(tmp_path / "run")}, cwd=tmp_path)
    assert loaded.kafka.bridge_password == filled.kafka.bridge_password


def test_explicit_password_is_kept_and_not_written(tmp_path: Path) -> None:
    cfg = FleetsimConfig().with_overrides(
        {"stack.run_dir": str(tmp_path / "run"), "postgres.admin_password": "chosen-by-operator"}
    )
    filled = ensure_secrets(cfg)
    assert secret(filled.postgres.admin_password, "x") == "chosen-by-operator"
    assert "chosen-by-operator" not in cfg.secrets_file.read_text()
    assert "FLEETSIM_POSTGRES__ADMIN_PASSWORD" not in cfg.secrets_file.read_text()


def test_loose_secrets_file_permissions_are_tightened(tmp_path: Path) -> None:
    cfg = FleetsimConfig().with_overrides({"stack.run_dir": str(tmp_path / "run")})
    ensure_secrets(cfg)
    os.chmod(cfg.secrets_file, 0o644)
    ensure_secrets(cfg)
    assert cfg.secrets_file.stat().st_mode & 0o777 == 0o600
