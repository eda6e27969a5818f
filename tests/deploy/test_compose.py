"""Static validation of docker-compose.yml (no Docker engine here).

The file is checked against the official Compose JSON Schema, then against the code: every
``fleetsim`` command parses with the real CLI parser, every FLEETSIM_* variable is one the config
loader accepts (and the resolved values validate), hosts and ports point at the services that
serve them, images are pinned, host ports are loopback-only, long-running services have health
checks, and passwords only ever come from ``.env``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from fleetsim.cli import build_parser
from fleetsim.kernel.config import ClusterConfig, FleetsimConfig, KafkaConfig, load_config, parse_env

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SPEC = REPO / ".." / "shared" / "data" / "compose-spec.json"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
FLEETSIM_IMAGE = "fleetsim:"
# Non-FLEETSIM variables a fleetsim-image service may set: read by Spark itself, not by Fleetsim.
SPARK_ENV = {"SPARK_PUBLIC_DNS"}
COMPOSE_ONLY_VARS = {"PG_SUPERUSER_PASSWORD"}
"""Variables of .env.example that feed images, not Fleetsim (postgres superuser secret)."""
# Which config key a Fleetsim command's health check port must equal.
HEALTH_PORT_KEY = {
    "stream": "spark.metrics_port",
    "bridge": "bridge.metrics_port",
    "sim": "simulation.metrics_port",
    "dashboard": "dashboard.port",
}
# Published engine ports: (service, container port) -> the config key clients use for it.
PUBLISHED = {
    ("mosquitto", 1883): "mqtt.port",
    ("kafka", 9094): "kafka.bootstrap",
    ("postgres", 5432): "postgres.port",
    ("dashboard", 8501): "dashboard.port",
    ("stream", 4040): "spark.ui_port",
    ("spark-master", 8080): "spark.master_ui_url",
}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ------------------------------------------------------------------------------------ loading
@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def dotenv_for_test() -> dict[str, str]:
    """.env.example with every placeholder replaced by a distinct test value."""
    return {k: f"test-{k.lower()}" if v == "CHANGE_ME" else v for k, v in env_example().items()}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose variable interpolation (``${X}``, ``${X:-d}``, ``${X:?e}``, ``$$``)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op in (":-", "-"):
            return arg or ""
        raise AssertionError(f"${{{name}}} is required by docker-compose.yml but not in .env.example")

    return _VAR.sub(sub, value)


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return {k: interpolate(str(v), dotenv_for_test()) for k, v in env.items()}


def is_fleetsim(svc: dict[str, Any]) -> bool:
    return str(svc.get("image", "")).startswith(FLEETSIM_IMAGE)


def dockerfile_env() -> dict[str, str]:
    """``ENV`` values of the Dockerfile (``KEY=value`` pairs, continuation lines joined)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            out.update(dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line)))
    return out


def service_config(name: str) -> FleetsimConfig:
    """The validated config a fleetsim-image service runs with (image ENV + service env + flags)."""
    env = {**dockerfile_env(), **environment(services()[name])}
    cfg = load_config(REPO / "fleetsim.toml", environ=env)
    args = parse_command(name)
    hook = getattr(args, "config_overrides", None)
    extra = hook(args) if callable(hook) else None
    return cfg.with_overrides(extra) if extra else cfg


def parse_command(name: str) -> Any:
    command = services()[name]["command"]
    assert isinstance(command, list), f"{name}: give `command` as a list (exec form)"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args([str(c) for c in command])
        except SystemExit:
            pytest.fail(f"{name}: `fleetsim {' '.join(command)}` is not a valid command:\n{err.getvalue()}")
    assert callable(getattr(args, "func", None)), f"{name}: `fleetsim {command[0]}` runs nothing"
    return args


def published(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host_ip, host_port, container_port)`` of every published port."""
    out = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), int(p["published"]), int(p["target"])))
            continue
        parts = str(p).split(":")
        assert len(parts) == 3, f"port {p!r}: write HOST_IP:HOST_PORT:CONTAINER_PORT"
        out.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
    return out


def one_shot(svc: dict[str, Any]) -> bool:
    return str(svc.get("restart", "no")) == "no"


def cfg_value(cfg: FleetsimConfig, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return getattr(getattr(cfg, section), key)


# -------------------------------------------------------------------------------------- tests
def test_compose_file_matches_the_official_schema() -> None:
    if not SPEC.is_file():
        pytest.fail(f"Compose JSON Schema not found at {SPEC.resolve()} (expected ../shared/data/)")
    schema = json.loads(SPEC.read_text(encoding="utf-8"))
    assert "draft-07" in schema.get("$schema", ""), "expected the draft-07 Compose schema"
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "docker-compose.yml violates the Compose schema:\n" + "\n".join(errors)


def test_every_fleetsim_service_runs_a_registered_command() -> None:
    names = [n for n, s in services().items() if is_fleetsim(s)]
    assert {"setup", "mqtt-config", "stream", "bridge", "sim", "dashboard"} <= set(names)
    for name in names:
        parse_command(name)
    assert getattr(parse_command("stream"), "master", None) == "spark://spark-master:7077"


def test_variable_names_and_values_are_what_the_config_loader_accepts() -> None:
    for name, svc in services().items():
        env = environment(svc)
        fleetsim_vars = {k: v for k, v in env.items() if k.startswith("FLEETSIM_")}
        parse_env(fleetsim_vars, source=f"docker-compose.yml service {name}")  # raises on unknown keys
        if is_fleetsim(svc):
            other = set(env) - set(fleetsim_vars) - SPARK_ENV
            assert not other, f"{name}: variables Fleetsim never reads: {sorted(other)}"
            service_config(name)  # values validate (ports are ints, enums allowed, ...)
    parse_env(dockerfile_env(), source="Dockerfile ENV")
    names = set(env_example())
    parse_env({k: "x" for k in names if k.startswith("FLEETSIM_")}, source=".env.example")
    assert names - {k for k in names if k.startswith("FLEETSIM_")} <= COMPOSE_ONLY_VARS


def test_clients_point_at_the_services_that_serve_them() -> None:
    svcs = services()
    kafka_env = environment(svcs["kafka"])
    listeners = dict(item.split("://")[::-1] for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners["kafka:9092"] == "CLIENT", "containers use the broker's CLIENT listener"
    assert "127.0.0.1:1883" in svcs["mosquitto"]["ports"][0] and "5432" in svcs["postgres"]["ports"][0]
    internal = {"mosquitto:1883", "postgres:5432", "kafka:9092"}
    cluster_bootstrap = ",".join(f"kafka-{n}:9092" for n in range(1, ClusterConfig().brokers + 1))
    for name, svc in svcs.items():
        if not is_fleetsim(svc) or name == "mqtt-config":
            continue
        cfg, env = service_config(name), environment(svc)
        if "cluster" in svc.get("profiles", []):
            # The cluster profile's clients bootstrap on every broker of the cluster, none else.
            if any(k.startswith("FLEETSIM_KAFKA__") and k.endswith("_PASSWORD") for k in env):
                assert cfg.kafka.bootstrap == cluster_bootstrap, f"{name}: Kafka {cfg.kafka.bootstrap}"
            env = {k: v for k, v in env.items() if not k.startswith("FLEETSIM_KAFKA__")}
        if any(k.startswith("FLEETSIM_MQTT__") and k.endswith("_PASSWORD") for k in env):
            assert f"{cfg.mqtt.host}:{cfg.mqtt.port}" in internal, (
                f"{name}: MQTT {cfg.mqtt.host}:{cfg.mqtt.port}"
            )
        if any(k.startswith("FLEETSIM_KAFKA__") and k.endswith("_PASSWORD") for k in env):
            assert cfg.kafka.bootstrap in internal, f"{name}: Kafka {cfg.kafka.bootstrap}"
        if any(k.startswith("FLEETSIM_POSTGRES__") and k.endswith("_PASSWORD") for k in env):
            assert f"{cfg.postgres.host}:{cfg.postgres.port}" in internal, f"{name}: PostgreSQL"
    master = svcs["spark-master"]["command"]
    master_url = f"spark://{master[master.index('--host') + 1]}:{master[master.index('--port') + 1]}"
    assert parse_command("stream").master == master_url
    assert svcs["spark-worker"]["command"][-1] == master_url
    stream = service_config("stream")
    # Executors in spark-worker must reach the driver by a name the compose network resolves.
    assert stream.spark.driver_host == svcs["stream"].get("hostname") == "stream"
    assert stream.spark.bind_address == "0.0.0.0"


def test_stream_session_honours_the_driver_address() -> None:
    """The job's Spark settings must use spark.driver_host/bind_address, or executors cannot connect."""
    from fleetsim.cloud.streaming import session

    cfg = service_config("stream").with_overrides({"stack.jvm_dir": str(REPO / ".cache" / "jvm")})
    conf = session.session_conf(cfg, "spark://spark-master:7077")
    assert conf["spark.driver.host"] == "stream"
    assert conf.get("spark.driver.bindAddress", "0.0.0.0") == "0.0.0.0"


def test_health_check_and_published_ports_match_config_keys() -> None:
    defaults = load_config(REPO / "fleetsim.toml", environ={})
    for name, svc in services().items():
        if is_fleetsim(svc) and not one_shot(svc):
            url = next(str(t) for t in svc["healthcheck"]["test"] if str(t).startswith("http://"))
            key = HEALTH_PORT_KEY[svc["command"][0]]
            assert urlparse(url).port == cfg_value(service_config(name), key), f"{name}: health port vs {key}"
        for _ip, host_port, container_port in published(svc):
            pkey = PUBLISHED.get((name, container_port))
            assert pkey, f"{name}: published port {container_port} is not one Fleetsim knows"
            # The host side equals the local stack's default, so host tools work unchanged.
            expected = default_port(defaults, pkey)
            assert host_port == expected, f"{name}: host port {host_port} != {pkey} ({expected})"
            if is_fleetsim(svc):
                assert container_port == cfg_value(service_config(name), pkey), f"{name}: {pkey}"


def default_port(defaults: FleetsimConfig, key: str) -> int:
    """The port a host-side ``fleetsim`` with the default fleetsim.toml uses for ``key``."""
    if key == "kafka.bootstrap":
        return int(defaults.kafka.bootstrap.split(",")[0].rsplit(":", 1)[1])
    if key == "spark.master_ui_url":
        # No default (local[*] has no master); the compose stack advertises the published one.
        port = urlparse(service_config("dashboard").spark.master_ui_url).port
        assert port is not None
        return port
    return int(cfg_value(defaults, key))


def test_host_ports_are_bound_to_loopback_only() -> None:
    for name, svc in services().items():
        for host_ip, host_port, _ in published(svc):
            assert host_ip == "127.0.0.1", (
                f"{name}: port {host_port} published on {host_ip or 'all interfaces'}"
            )


def test_images_are_pinned_by_explicit_tags() -> None:
    pinned = re.compile(r"^[a-z0-9][a-z0-9._/-]*:(?!latest$)[A-Za-z0-9][A-Za-z0-9._-]*$")
    images = [str(s["image"]) for s in services().values()]
    images += re.findall(r"(?m)^FROM\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"))
    for image in images:
        assert pinned.match(image), f"image {image!r} is not pinned by an explicit tag"
    spark = {str(s["image"]) for s in services().values() if str(s["image"]).startswith("apache/spark:")}
    from importlib.metadata import version

    assert spark == {f"apache/spark:{version('pyspark')}-scala2.13-java17-python3-ubuntu"}


def test_long_running_services_have_health_checks_and_ordered_starts() -> None:
    svcs = services()
    for name, svc in svcs.items():
        if not one_shot(svc):
            test = (svc.get("healthcheck") or {}).get("test")
            assert test and test != ["NONE"] and not svc["healthcheck"].get("disable"), (
                f"{name}: no health check"
            )
        for dep, spec in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if one_shot(svcs[dep]) else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}: condition should be {want}"
    assert "service_healthy" in str(svcs["stream"]["depends_on"]["spark-worker"])


def test_passwords_only_come_from_the_env_file() -> None:
    for name, svc in services().items():
        for key, raw in (svc.get("environment") or {}).items():
            if key.endswith("PASSWORD"):
                wanted = r"\$\{" + key + r":\?[^}]+\}"
                assert re.fullmatch(wanted, str(raw)), f"{name}: {key} must be ${{{key}:?...}}"
    assert set(env_example().values()) == {"CHANGE_ME"}, ".env.example must hold placeholders only"
    secret_vars = {k for k in env_example() if k.endswith("PASSWORD")}
    assert secret_vars == set(env_example()), "every .env.example entry is a credential"
    assert compose()["secrets"]["pg_superuser_password"]["environment"] in COMPOSE_ONLY_VARS
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert ".env" in (REPO / ".dockerignore").read_text().split()
    assert not [k for k in dockerfile_env() if "PASSWORD" in k or "SECRET" in k], "secrets baked in the image"


def test_volumes_are_named_or_shipped_files() -> None:
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for vol in svc.get("volumes", []):
            source = str(vol).split(":")[0]
            if source.startswith("."):
                assert (REPO / source).is_file(), f"{name}: bind-mounted {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared at the top level"
    for shared in ("spark-checkpoints",):
        users = {
            n
            for n, s in services().items()
            if any(str(v).startswith(f"{shared}:") for v in s.get("volumes", []))
        }
        assert {"stream", "spark-worker", "setup"} <= users


def test_bridges_scale_over_a_shared_subscription() -> None:
    bridge = services()["bridge"]
    assert int(bridge["deploy"]["replicas"]) >= 2
    assert service_config("bridge").bridge.shared_group
    assert not any("container_name" in s for s in services().values()), "container_name prevents --scale"
    assert "FLEETSIM_BRIDGE__CLIENT_ID" not in environment(bridge), "replicas need distinct client ids"
    assert "FLEETSIM_BRIDGE__CLIENT_ID" in (REPO / "docker" / "entrypoint.sh").read_text()


def test_kafka_broker_identities_match_the_config() -> None:
    env = environment(services()["kafka"])
    defaults = KafkaConfig()
    jaas = env["KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"]
    users = set(re.findall(r'user_([\w.-]+)="', jaas))
    assert users == {defaults.admin_user, defaults.bridge_user, defaults.stream_user}
    assert re.search(
        rf'username="{defaults.admin_user}" password="test-fleetsim_kafka__admin_password"', jaas
    )
    assert env["KAFKA_SUPER_USERS"] == f"User:{defaults.admin_user}"
    assert int(env["KAFKA_NUM_PARTITIONS"]) == defaults.partitions
    for listener in ("CLIENT", "CONTROLLER", "HOST"):
        assert env[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"] == jaas
    assert "PLAINTEXT" not in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].replace("SASL_PLAINTEXT", "")


def test_dockerfile_copies_only_shipped_files() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    ignored = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip()}
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert "fleetsim/jvm/pom.xml" in sources, "JVM jars must be resolved from the project's pom"
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert src.split("/")[0] not in ignored, f"Dockerfile copies {src}, excluded by .dockerignore"
    assert re.search(r"mvn .*-P spark-kafka .*dependency:copy-dependencies", text)
    assert re.search(r"(?m)^USER (?!root)\S+", text), "the image must not run as root"


def test_spark_services_start_classes_of_the_pinned_spark() -> None:
    """The master/worker main classes exist in the Spark jars of the pinned pyspark (same version)."""
    import zipfile

    from fleetsim.stack.spark_standalone import spark_home

    core = next((spark_home() / "jars").glob("spark-core_*.jar"))
    with zipfile.ZipFile(core) as jar:
        classes = set(jar.namelist())
    for name in ("spark-master", "spark-worker"):
        command = services()[name]["command"]
        assert command[0] == "/opt/spark/bin/spark-class", f"{name}: {command[0]}"
        assert command[1].replace(".", "/") + ".class" in classes, f"{name}: no class {command[1]}"


def test_shell_scripts_parse() -> None:
    import subprocess

    for script in (REPO / "docker").rglob("*.sh"):
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def in_profile(profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items() if profile in s.get("profiles", [])}


def test_cluster_profile_has_the_shape_and_settings_of_the_native_profile() -> None:
    """Counts, replication and sizes of the compose `cluster` profile equal the [cluster] defaults
    that `fleetsim up --profile cluster` reads (fleetsim/kernel/config.py: the one place)."""
    want = ClusterConfig()
    svcs = in_profile("cluster")
    brokers = {n: environment(s) for n, s in svcs.items() if re.fullmatch(r"kafka-\d+", n)}
    assert len(brokers) == want.brokers
    single_jaas = environment(services()["kafka"])["KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"]
    voters = {f"{n}@kafka-{n}:9093" for n in range(1, want.brokers + 1)}
    for name, env in brokers.items():
        assert env["KAFKA_NODE_ID"] == name.split("-")[1]
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == want.replication_factor
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == want.replication_factor
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == want.min_insync_replicas
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == want.min_insync_replicas
        assert f"-Xmx{want.broker_heap_mb}m" in env["KAFKA_HEAP_OPTS"].split()
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"CLIENT://{name}:9092"
        # Same identities, super user and deny-by-default as the single-node broker.
        assert env["KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"] == single_jaas
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert env["KAFKA_SUPER_USERS"] == environment(services()["kafka"])["KAFKA_SUPER_USERS"]
        assert not svcs[name].get("ports"), f"{name}: the cluster's brokers are not published"

    assert service_config("cluster-setup").kafka.replication_factor == want.replication_factor
    worker = svcs["cluster-spark-worker"]
    assert int(worker["deploy"]["replicas"]) == want.spark_workers
    cmd = [str(c) for c in worker["command"]]
    assert cmd[cmd.index("--cores") + 1] == str(want.worker_cores)
    assert cmd[cmd.index("--memory") + 1] == want.worker_memory
    assert environment(worker)["SPARK_DAEMON_MEMORY"] == want.daemon_memory
    assert cmd[-1] == parse_command("cluster-stream").master == "spark://spark-master:7077"

    bridge = svcs["cluster-bridge"]
    assert int(bridge["deploy"]["replicas"]) == want.bridges
    assert service_config("cluster-bridge").bridge.shared_group == want.shared_group
    sims = sorted(n for n in svcs if n.startswith("cluster-sim-"))
    assert len(sims) == want.sim_shards
    shards = {service_config(n).simulation.shard for n in sims}
    assert shards == {f"{i}/{want.sim_shards}" for i in range(want.sim_shards)}
    ledgers = {service_config(n).simulation.ledger_file for n in sims}
    assert len(ledgers) == want.sim_shards, "one ground-truth ledger per shard"
    # The cluster's checkpoints must not be the single-node job's.
    assert "cluster-checkpoints:/data/checkpoints" in svcs["cluster-stream"]["volumes"]
    assert "cluster-checkpoints:/data/checkpoints" in worker["volumes"]
