"""`fleetsim up` / `down` / `status` end to end on a DEDICATED stack (own ports and run dir).

Disruptive on purpose (down, up again), so it never touches the shared session fixtures.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from fleetsim.cli import main
from fleetsim.kernel.clients import kafka_python_kwargs, pg_connect
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.errors import PortInUseError
from fleetsim.stack import Mosquitto, process

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENGINES = "mosquitto,kafka,postgres"


@pytest.fixture(scope="module")
def stack_toml(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("lifecycle")
    p = process.free_ports(9)
    toml = home / "fleetsim.toml"
    toml.write_text(
        f"""
[stack]
run_dir = "run"
jvm_dir = "{REPO / ".cache" / "jvm"}"
components = ["mosquitto", "kafka", "postgres"]
start_timeout_s = 120
stop_timeout_s = 30
[mqtt]
port = {p[0]}
[kafka]
bootstrap = "127.0.0.1:{p[1]}"
controller_port = {p[2]}
partitions = 2
[postgres]
port = {p[3]}
[spark]
metrics_port = {p[4]}
ui_port = {p[5]}
[bridge]
metrics_port = {p[6]}
[simulation]
metrics_port = {p[7]}
devices_file = "{REPO / "devices.csv"}"
[dashboard]
port = {p[8]}
""",
        encoding="utf-8",
    )
    yield toml
    main(["--config", str(toml), "down"])


def _cfg(toml: Path) -> FleetsimConfig:
    return load_config(toml, environ={})


def _status(toml: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["--config", str(toml), "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _end_offset(cfg: FleetsimConfig) -> int:
    consumer = KafkaConsumer(**kafka_python_kwargs(cfg, "admin"))
    try:
        tps = [TopicPartition(cfg.kafka.telemetry_topic, p) for p in range(cfg.kafka.partitions)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def _read_all_keys(cfg: FleetsimConfig) -> set[bytes]:
    consumer = KafkaConsumer(
        cfg.kafka.telemetry_topic,
        **kafka_python_kwargs(cfg, "stream"),
        group_id=f"fleetsim-lifecycle-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=8000,
    )
    try:
        return {r.key for r in consumer}
    finally:
        consumer.close()


def test_up_twice_down_up_keeps_data(stack_toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(stack_toml), "up", "--only", ENGINES]) == 0
    cfg = _cfg(stack_toml)  # now with the generated secrets
    first = {c["name"]: c for c in _status(stack_toml, capsys)["components"]}
    assert all(first[n]["state"] == "up" for n in ENGINES.split(","))

    # `up` twice is safe: same processes, still healthy.
    assert main(["--config", str(stack_toml), "up", "--only", ENGINES]) == 0
    again = {c["name"]: c for c in _status(stack_toml, capsys)["components"]}
    assert [again[n]["pid"] for n in ENGINES.split(",")] == [first[n]["pid"] for n in ENGINES.split(",")]

    key = f"dev-{uuid.uuid4().hex[:8]}".encode()
    producer = KafkaProducer(**kafka_python_kwargs(cfg, "bridge"), acks="all")
    try:
        producer.send(cfg.kafka.telemetry_topic, key=key, value=b'{"kept": true}').get(timeout=30)
    finally:
        producer.close()
    conn = pg_connect(cfg, "writer")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT ensure_sensor_data_partition(current_date)")
            cur.execute(
                "INSERT INTO sensor_data (device_id, seq, ts, status) VALUES (%s, 1, now(), 'OK')",
                (key.decode(),),
            )
    finally:
        conn.close()
    offsets_before = _end_offset(cfg)

    assert main(["--config", str(stack_toml), "down"]) == 0
    down = {c["name"]: c for c in _status(stack_toml, capsys)["components"]}
    assert all(down[n]["state"] == "down" and down[n]["pid"] is None for n in ENGINES.split(","))

    assert main(["--config", str(stack_toml), "up", "--only", ENGINES]) == 0
    assert _end_offset(cfg) == offsets_before
    assert key in _read_all_keys(cfg)
    conn = pg_connect(cfg, "reader")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM sensor_data WHERE device_id = %s", (key.decode(),))
            assert cur.fetchone()[0] == 1
    finally:
        conn.close()
    after = {c["name"]: c for c in _status(stack_toml, capsys)["components"]}
    assert after["postgres"]["metrics"]["sensor_data_rows"] >= 1
    assert after["kafka"]["metrics"]["records"][cfg.kafka.telemetry_topic] == offsets_before


def test_status_json_has_urls_and_secrets_path_but_no_password(
    stack_toml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(stack_toml), "up", "--only", ENGINES]) == 0
    cfg = _cfg(stack_toml)
    capsys.readouterr()
    assert main(["--config", str(stack_toml), "status", "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert doc["secrets_file"] == str(cfg.secrets_file)
    assert Path(doc["secrets_file"]).stat().st_mode & 0o777 == 0o600
    assert doc["urls"]["postgres"].startswith(f"postgresql://{cfg.postgres.admin_user}@127.0.0.1:")
    for section in ("mqtt", "kafka", "postgres"):
        for key, value in getattr(cfg, section):
            if key.endswith("_password") and value is not None:
                assert value.get_secret_value() not in out, f"{section}.{key} leaked"
    capsys.readouterr()
    assert main(["--config", str(stack_toml), "config", "show"]) == 0
    shown = capsys.readouterr().out
    assert cfg.postgres.admin_password is not None
    assert cfg.postgres.admin_password.get_secret_value() not in shown
    assert json.loads(shown)["postgres"]["admin_password"] == "********"


def test_taken_port_gives_port_in_use_and_starts_nothing(
    fleet_cfg: FleetsimConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = fleet_cfg.with_overrides(
            {"mqtt.port": port, "stack.run_dir": str(tmp_path / "run"), "stack.port_grace_s": 0.5}
        )
        svc = Mosquitto(cfg)
        with pytest.raises(PortInUseError, match=rf"port {port} \(mqtt.port\).*--set mqtt.port="):
            svc.start()
        assert not svc.is_running()
        assert not svc.pid_file.exists()
        # Through the CLI: exit 1 and ONE line saying what to do.
        toml = tmp_path / "fleetsim.toml"
        toml.write_text(
            f'[stack]\nrun_dir = "run"\nport_grace_s = 0.5\n[mqtt]\nport = {port}\n', encoding="utf-8"
        )
        capsys.readouterr()
        assert main(["--config", str(toml), "up", "--only", "mosquitto"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is taken by another process" in err[0]
