"""Device registry: the ``devices`` table and per-device MQTT identities.

- :mod:`fleetsim.registry.model`: the :class:`DeviceRecord`, validation, topics, connection text.
- :mod:`fleetsim.registry.store`: SQL on the ``devices`` table (parameterized, writer/reader roles).
- :mod:`fleetsim.registry.seed`: ``devices.csv`` -> registry (idempotent upsert at start-up).
- :mod:`fleetsim.registry.identity`: per-device MQTT credentials (hashes only) and broker reloads.
- :mod:`fleetsim.registry.service`: the operations behind ``fleetsim device ...``.

The bridge's in-memory copy of the table (:mod:`fleetsim.bridge.registry_directory`) belongs to the
bridge runtime, which imports only the kernel.
"""
