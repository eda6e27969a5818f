"""Prometheus metrics of the job's driver (own registry; ``fleetsim stream`` serves it on 127.0.0.1
through :class:`fleetsim.kernel.service.Service`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class StreamMetrics:
    """Every metric the job exports; one instance per job."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.rows_written = Counter(
            "fleetsim_stream_rows_written", "New rows written to PostgreSQL", ["table"], registry=r
        )
        self.input_rows = Counter("fleetsim_stream_input_rows", "Kafka records read", ["query"], registry=r)
        self.malformed_rows = Counter(
            "fleetsim_stream_malformed_rows", "Telemetry records rejected by the parser", registry=r
        )
        self.late_rows_dropped = Counter(
            "fleetsim_stream_late_rows_dropped",
            "Rows dropped from windows by the watermark",
            ["query"],
            registry=r,
        )
        self.batch_errors = Counter(
            "fleetsim_stream_batch_errors",
            "Micro-batches whose write failed (Spark retries)",
            ["query"],
            registry=r,
        )
        self.last_batch_id = Gauge(
            "fleetsim_stream_last_batch_id", "Last completed batch id", ["query"], registry=r
        )
        self.last_batch_duration_ms = Gauge(
            "fleetsim_stream_last_batch_duration_ms",
            "Trigger execution time of the last batch",
            ["query"],
            registry=r,
        )
        self.last_write_ms = Gauge(
            "fleetsim_stream_last_batch_write_ms", "PostgreSQL time of the last batch", ["query"], registry=r
        )
        self.latency_p95_ms = Gauge(
            "fleetsim_stream_last_batch_latency_p95_ms",
            "p95 event-to-row latency of the last raw batch",
            registry=r,
        )
        self.latency_p50_ms = Gauge(
            "fleetsim_stream_last_batch_latency_p50_ms",
            "p50 event-to-row latency of the last raw batch",
            registry=r,
        )
        self.watermark_s = Gauge(
            "fleetsim_stream_watermark_seconds", "Event-time watermark (epoch seconds)", ["query"], registry=r
        )
        self.backlog_records = Gauge(
            "fleetsim_stream_backlog_records",
            "Kafka records the last batch left unread (its cap held it back); growing: falling behind",
            ["query"],
            registry=r,
        )
        self.notifications = Counter(
            "fleetsim_stream_notifications",
            "Incident notification deliveries by channel (mqtt, webhook) and outcome (sent, error, failed)",
            ["channel", "outcome"],
            registry=r,
        )
        self.notifications_undelivered = Gauge(
            "fleetsim_stream_notifications_undelivered",
            "Incident notifications not delivered: failed for good, or still pending",
            ["state"],
            registry=r,
        )
        self.state_rows = Gauge(
            "fleetsim_stream_state_rows", "Rows held in the query's state stores", ["query"], registry=r
        )
        self.state_memory_bytes = Gauge(
            "fleetsim_stream_state_memory_bytes",
            "Memory of the query's state stores (RocksDB's is native, outside the JVM heap)",
            ["query"],
            registry=r,
        )
        self.state_op_ms = Gauge(
            "fleetsim_stream_state_op_ms",
            "Last batch's time in a stateful operator's stores, by phase: updates (reading and "
            "writing keys), removals (evicting what the watermark passed: a full scan of the "
            "store), commit (changelog and checkpoint)",
            ["query", "operator", "phase"],
            registry=r,
        )
        self.input_rate = Gauge(
            "fleetsim_stream_input_rows_per_second", "Input rate of the last batch", ["query"], registry=r
        )
