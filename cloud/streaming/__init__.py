"""Spark Structured Streaming job: Kafka -> parse/dedup/alerts/windows -> PostgreSQL.

Pure DataFrame transforms live in :mod:`.schema`, :mod:`.parse`, :mod:`.rules`, :mod:`.windows` and
:mod:`.lines`; I/O in :mod:`.pgsink`, :mod:`.sources`, :mod:`.listener`; wiring in :mod:`.job`.
"""
