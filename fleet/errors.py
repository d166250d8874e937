"""Errors of the fleet package.

Exceptions::

    FleetError
     ├── ProtocolError          a wire message that is malformed, oversized or of an unknown schema
     ├── FleetConfigError       an invalid plan, selector or analysis setting
     └── RolloutError           a rollout command the current state does not allow, or a malformed verdict
"""


class FleetError(Exception):
    """Base class for everything the fleet package raises."""


class ProtocolError(FleetError, ValueError):
    """A wire message that cannot be accepted; the message says what was wrong and on which topic."""

    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(f"{message} (topic {topic})" if topic else message)
        self.topic = topic


class FleetConfigError(FleetError, ValueError):
    """Invalid configuration given to a fleet component."""


class RolloutError(FleetError):
    """A command the rollout's current state does not allow, or a gate verdict that cannot be read."""
