"""Identity files (hashes only, 0600, park/restore) and TLS material, without a running broker."""

from __future__ import annotations

import ssl
import stat
import subprocess
from pathlib import Path

import pytest

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.registry import identity
from fleetsim.stack import tls
from fleetsim.stack.mosquitto import Mosquitto, hash_password, read_device_passwd
from fleetsim.stack.secrets import ensure_secrets


@pytest.fixture
def cfg(tmp_path: Path) -> FleetsimConfig:
    return ensure_secrets(FleetsimConfig().with_overrides({"stack.run_dir": str(tmp_path / "run")}))


def _verify(password: str, hashed: str) -> bool:
    import base64

    _, _, iterations, salt, _digest = hashed.split("$")
    assert iterations == "101"
    return hash_password(password, salt=base64.b64decode(salt)) == hashed


def test_issue_stores_only_a_hash_in_a_private_file(cfg: FleetsimConfig) -> None:
    change = identity.issue(cfg, "dev-1")
    assert change.password and len(change.password) >= 24
    assert change.broker_reloaded is False  # no broker running here
    path = Mosquitto(cfg).device_passwd_file
    text = path.read_text()
    assert change.password not in text
    assert _verify(change.password, read_device_passwd(path)["dev-1"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identity.has_identity(cfg, "dev-1")


def test_rotation_replaces_the_hash(cfg: FleetsimConfig) -> None:
    first = identity.issue(cfg, "dev-1")
    second = identity.issue(cfg, "dev-1")
    assert first.password != second.password
    hashed = read_device_passwd(Mosquitto(cfg).device_passwd_file)["dev-1"]
    assert _verify(second.password or "", hashed)
    assert not _verify(first.password or "", hashed)


def test_revoke_parks_the_hash_and_restore_brings_back_the_same_credentials(cfg: FleetsimConfig) -> None:
    pw = identity.issue(cfg, "dev-1").password or ""
    identity.issue(cfg, "dev-2")
    identity.revoke(cfg, "dev-1")
    assert not identity.has_identity(cfg, "dev-1")
    assert identity.has_identity(cfg, "dev-2")
    parked = identity.disabled_file(cfg)
    assert stat.S_IMODE(parked.stat().st_mode) == 0o600
    assert stat.S_IMODE(parked.parent.stat().st_mode) == 0o700
    assert identity.restore(cfg, "dev-1") is not None
    assert _verify(pw, read_device_passwd(Mosquitto(cfg).device_passwd_file)["dev-1"])
    assert "dev-1" not in read_device_passwd(parked)
    assert identity.restore(cfg, "dev-1") is None


def test_broker_password_file_includes_device_hashes(cfg: FleetsimConfig) -> None:
    identity.issue(cfg, "dev-1")
    Mosquitto(cfg).write_auth_files()
    users = read_device_passwd(Mosquitto(cfg).passwd_file)
    assert "dev-1" in users
    assert cfg.mqtt.bridge_user in users


# ------------------------------------------------------------------------------------------ TLS
def test_server_names_cover_the_listen_address_and_extra_names() -> None:
    cfg = FleetsimConfig().with_overrides(
        {"mqtt.listen": "127.0.0.2", "mqtt.tls_names": ["gw.example", "10.1.2.3"]}
    )
    names = tls.server_names(cfg)
    assert names[:3] == ["DNS:gw.example", "IP:10.1.2.3", "IP:127.0.0.2"]
    assert "DNS:localhost" in names
    assert tls.public_host(cfg) == "gw.example"
    assert tls.public_host(cfg.with_overrides({"mqtt.tls_names": []})) == "127.0.0.2"


def test_generated_certificate_verifies_against_the_ca_for_the_listen_address(cfg: FleetsimConfig) -> None:
    cfg = cfg.with_overrides({"mqtt.listen": "127.0.0.2"})
    f = tls.ensure_tls(cfg)
    assert stat.S_IMODE(f.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.server_key.stat().st_mode) == 0o640
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(f.ca_cert), "-verify_ip", "127.0.0.2", str(f.server_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    wrong = subprocess.run(
        ["openssl", "verify", "-CAfile", str(f.ca_cert), "-verify_ip", "127.0.0.9", str(f.server_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
    # Python's TLS client accepts the chain (what paho uses).
    ctx = ssl.create_default_context(cafile=str(f.ca_cert))
    ctx.load_cert_chain(str(f.server_cert), str(f.server_key))


def test_ca_is_kept_and_server_cert_reissued_when_names_change(cfg: FleetsimConfig) -> None:
    a = tls.ensure_tls(cfg.with_overrides({"mqtt.listen": "127.0.0.2"}))
    ca1, srv1, key1 = a.ca_cert.read_bytes(), a.server_cert.read_bytes(), a.server_key.read_bytes()
    tls.ensure_tls(cfg.with_overrides({"mqtt.listen": "127.0.0.2"}))
    assert a.server_cert.read_bytes() == srv1  # unchanged names: nothing re-issued
    tls.ensure_tls(cfg.with_overrides({"mqtt.listen": "127.0.0.3"}))
    assert a.ca_cert.read_bytes() == ca1  # devices keep trusting the same CA
    assert a.server_cert.read_bytes() != srv1
    assert a.server_key.read_bytes() == key1  # pinned public keys (Tasmota) stay valid
    assert "IP:127.0.0.3" in (a.server_cert.parent / "server.names").read_text()


def test_listener_lines_and_detection_from_the_broker_config(cfg: FleetsimConfig) -> None:
    on = cfg.with_overrides({"mqtt.listen": "127.0.0.2", "mqtt.tls_port": 18883})
    f = tls.files(on)
    lines = tls.listener_lines(on, f)
    assert lines[0] == "listener 18883 127.0.0.2"
    assert f"certfile {f.server_cert}" in lines
    assert tls.configured_listener(cfg) is None
    conf = cfg.run_dir / "mosquitto" / "mosquitto.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("listener 1883 127.0.0.1\nallow_anonymous false\n" + "\n".join(lines) + "\n")
    assert tls.configured_listener(cfg) == ("127.0.0.2", 18883)
