"""MQTT -> Kafka bridge: at-least-once forwarding with validation, dead-lettering and adapters.

Layout (one module, one job):

- :mod:`bridge.routing`: topic filters -> adapter, device id slot, shared-subscription names.
- :mod:`bridge.adapters`: one module per payload format (native v1, SenML, Tasmota).
- :mod:`bridge.directory`: the device-registry hook (who is known / enabled).
- :mod:`bridge.pipeline`: pure hot-path decision: forward these records, or dead-letter why.
- :mod:`bridge.inflight`: receive-ordered tracking of unconfirmed messages and their acks.
- :mod:`bridge.kafka_sink`: the Kafka producer (confluent-kafka, chosen by the benchmark).
- :mod:`bridge.metrics`: Prometheus collector over plain counters (cheap on the hot path).
- :mod:`bridge.runtime`: wires MQTT, pipeline, tracker and sink; back-pressure and shutdown.
- :mod:`bridge.cli`: ``fleetsim bridge``.
"""
