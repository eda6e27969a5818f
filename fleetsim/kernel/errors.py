"""The project's exception hierarchy: one base, specific subclasses, always chained with ``from``."""

from __future__ import annotations


class FleetsimError(Exception):
    """Base of every error Fleetsim raises on purpose."""


class ConfigError(FleetsimError):
    """A configuration value is missing, malformed or not one of the allowed values."""


class ContractError(FleetsimError):
    """A message does not satisfy the wire contract."""


class StackError(FleetsimError):
    """A local-stack service could not be set up, started, reached or stopped."""


class MissingDependencyError(StackError):
    """A binary or jar the stack needs (java, mvn, mosquitto, postgres, the Kafka jars) is absent."""


class PortInUseError(StackError):
    """A port the stack wants to bind is already taken by another process."""


class MigrationError(StackError):
    """A SQL migration failed to apply."""


class SimulationError(FleetsimError):
    """The edge simulator was given an invalid fleet, fault or schedule."""


class FleetFileError(SimulationError):
    """``devices.csv`` (or a replay file) has a bad row; the message names row and column."""


class StreamingError(FleetsimError):
    """The Spark streaming job hit an unrecoverable condition."""


class KafkaDataLossError(StreamingError):
    """Kafka no longer has records the job had not read yet (aged out or deleted): the job stops
    rather than skip them (Spark's ``failOnDataLoss``); the message names topic, partition, offsets."""


class SinkError(StreamingError):
    """Writing a micro-batch to PostgreSQL failed."""


class DashboardError(FleetsimError):
    """The dashboard could not load its data."""


class ExperimentError(FleetsimError):
    """A scenario file is invalid or an experiment run failed."""


class RegistryError(FleetsimError):
    """A device-registry operation failed (unknown id, duplicate id, ...)."""
