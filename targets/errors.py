"""Errors raised by the target registry."""


class TargetError(ValueError):
    """Base class for target errors."""


class UnknownTargetError(TargetError, KeyError):
    """A target name that is not in the registry."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown target {name!r}; known targets: {', '.join(sorted(known))}")
        self.name = name

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])
