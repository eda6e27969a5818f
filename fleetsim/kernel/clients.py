"""Client factories shared by every runtime: one place that turns the config into connections.

Nothing here connects at import time; each function builds (and optionally connects) a client
for a named identity, so the simulator, bridge, streaming job, dashboard and CLI agree on hosts,
credentials and TLS.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from fleetsim.kernel.config import FleetsimConfig, secret

MqttIdentity = Literal["bridge", "sim", "tool", "notifier"]
KafkaIdentity = Literal["bridge", "stream", "admin"]
PgRole = Literal["admin", "writer", "reader", "operator"]


# ------------------------------------------------------------------------------------------ MQTT
def mqtt_credentials(cfg: FleetsimConfig, identity: MqttIdentity) -> tuple[str, str]:
    user = getattr(cfg.mqtt, f"{identity}_user")
    password = secret(getattr(cfg.mqtt, f"{identity}_password"), f"mqtt.{identity}_password")
    return user, password


def mqtt_client(
    cfg: FleetsimConfig,
    identity: MqttIdentity,
    client_id: str,
    *,
    clean: bool = True,
    session_expiry_s: int = 0,
    tls: bool = False,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    receive_maximum: int | None = None,
    client_class: Any = None,
    reconnect: bool = True,
) -> Any:
    """A configured (not yet connected) paho-mqtt 2.x client.

    ``clean=False`` asks for a persistent session (v5: clean_start=False plus a session expiry;
    3.1.1: clean_session=False). Returns the client and leaves connecting to the caller, because
    the bridge and the simulator connect with different retry and back-pressure policies.
    ``receive_maximum`` (v5 only) caps the QoS 1/2 messages the broker sends before they are
    acknowledged: the bridge's back-pressure window (3.1.1 has no such property: the broker's
    ``max_inflight_messages`` applies). ``client_class``: a ``paho.mqtt.client.Client`` subclass
    to instantiate instead (the bridge's buffered-I/O client). ``reconnect=False``: once connected,
    a lost connection ends the network loop instead of reconnecting (the bridge's adopted sessions
    must not fight a returning owner for its session).
    """
    # Lazy: every runtime imports this module; the dashboard and the streaming job never use MQTT.
    import paho.mqtt.client as mqtt

    v5 = cfg.mqtt.protocol == "5"
    client: Any = (client_class or mqtt.Client)(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else clean,
        reconnect_on_failure=reconnect,
    )
    if username is None:
        username, password = mqtt_credentials(cfg, identity)
    client.username_pw_set(username, password)
    if tls:
        ca = str(cfg.mqtt.ca_file) if cfg.mqtt.ca_file else None
        client.tls_set(ca_certs=ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client._fleetsim_connect_args = {
        "host": cfg.mqtt.host,
        "port": port or (cfg.mqtt.tls_port if tls else cfg.mqtt.port),
        "keepalive": cfg.mqtt.keepalive_s,
        "clean_start": clean if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        "session_expiry_s": session_expiry_s if v5 else None,
        "receive_maximum": receive_maximum if v5 else None,
    }
    return client


def mqtt_connect(client: Any, *, blocking: bool = True) -> None:
    """Connect a client built by :func:`mqtt_client` with the arguments it recorded."""
    # Lazy: see mqtt_client.
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    a = client._fleetsim_connect_args
    props = None
    if a["session_expiry_s"] is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = a["session_expiry_s"]
    if a.get("receive_maximum"):
        props = props or Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = a["receive_maximum"]
    kwargs: dict[str, Any] = {"host": a["host"], "port": a["port"], "keepalive": a["keepalive"]}
    if client.protocol == mqtt.MQTTv5:
        kwargs["clean_start"] = a["clean_start"]
        kwargs["properties"] = props
    if blocking:
        client.connect(**kwargs)
    else:
        client.connect_async(**kwargs)


# ----------------------------------------------------------------------------------------- Kafka
def kafka_credentials(cfg: FleetsimConfig, identity: KafkaIdentity) -> tuple[str, str]:
    user = getattr(cfg.kafka, f"{identity}_user")
    password = secret(getattr(cfg.kafka, f"{identity}_password"), f"kafka.{identity}_password")
    return user, password


def kafka_python_kwargs(cfg: FleetsimConfig, identity: KafkaIdentity) -> dict[str, Any]:
    """Connection kwargs for kafka-python's KafkaProducer/KafkaConsumer/KafkaAdminClient."""
    kw: dict[str, Any] = {
        "bootstrap_servers": cfg.kafka.bootstrap.split(","),
        "security_protocol": cfg.kafka.security_protocol,
    }
    if cfg.kafka.security_protocol.startswith("SASL"):
        user, password = kafka_credentials(cfg, identity)
        kw.update(
            sasl_mechanism=cfg.kafka.sasl_mechanism, sasl_plain_username=user, sasl_plain_password=password
        )
    return kw


def confluent_kafka_config(cfg: FleetsimConfig, identity: KafkaIdentity) -> dict[str, Any]:
    """Connection settings for confluent-kafka (librdkafka) clients: the bridge's producer."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.kafka.bootstrap,
        "security.protocol": cfg.kafka.security_protocol,
    }
    if cfg.kafka.security_protocol.startswith("SASL"):
        user, password = kafka_credentials(cfg, identity)
        conf.update(
            {"sasl.mechanism": cfg.kafka.sasl_mechanism, "sasl.username": user, "sasl.password": password}
        )
    return conf


def spark_kafka_options(cfg: FleetsimConfig, identity: KafkaIdentity = "stream") -> dict[str, str]:
    """``kafka.*`` options for Spark's Kafka source (credentials via an inline JAAS config)."""
    opts = {
        "kafka.bootstrap.servers": cfg.kafka.bootstrap,
        "kafka.security.protocol": cfg.kafka.security_protocol,
    }
    if cfg.kafka.security_protocol.startswith("SASL"):
        user, password = kafka_credentials(cfg, identity)
        module = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if cfg.kafka.sasl_mechanism == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        opts["kafka.sasl.mechanism"] = cfg.kafka.sasl_mechanism
        opts["kafka.sasl.jaas.config"] = f'{module} required username="{user}" password="{password}";'
    return opts


# ------------------------------------------------------------------------------------ PostgreSQL
def pg_dsn_kwargs(cfg: FleetsimConfig, role: PgRole) -> dict[str, Any]:
    """psycopg2.connect kwargs for one of the four roles."""
    pg = cfg.postgres
    return {
        "host": pg.host,
        "port": pg.port,
        "dbname": pg.database,
        "user": getattr(pg, f"{role}_user"),
        "password": secret(getattr(pg, f"{role}_password"), f"postgres.{role}_password"),
        "sslmode": pg.sslmode,
        "connect_timeout": 5,
        "application_name": f"fleetsim-{role}",
    }


def pg_connect(cfg: FleetsimConfig, role: PgRole, **extra: Any) -> Any:
    """A new psycopg2 connection as ``role``."""
    # Lazy: every runtime imports this module; the simulator never uses PostgreSQL.
    import psycopg2

    return psycopg2.connect(**{**pg_dsn_kwargs(cfg, role), **extra})


def pg_url(cfg: FleetsimConfig, role: PgRole) -> str:
    """Connection URL without the password (for status output)."""
    pg = cfg.postgres
    return f"postgresql://{getattr(pg, f'{role}_user')}@{pg.host}:{pg.port}/{pg.database}"
