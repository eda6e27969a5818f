"""Device registry: the ``devices`` table, per-device MQTT identities and the bridge's directory.

- :mod:`fleetsim.registry.model`: the :class:`Device` record, validation, topics, connection text.
- :mod:`fleetsim.registry.store`: SQL on the ``devices`` table (parameterized, writer/reader roles).
- :mod:`fleetsim.registry.seed`: ``devices.csv`` -> registry (idempotent upsert at start-up).
- :mod:`fleetsim.registry.identity`: per-device MQTT credentials (hashes only) and broker reloads.
- :mod:`fleetsim.registry.service`: the operations behind ``fleetsim device ...``.
- :mod:`fleetsim.registry.directory`: the bridge-side, periodically refreshed copy of the registry.
"""
