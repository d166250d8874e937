"""The serving exception family. Every error a request can meet is one of these; the HTTP layer maps
``status_code`` (and ``retry_after`` for overload) in one handler, ``reason`` labels the failure metric."""

from __future__ import annotations

from hub.errors import HubError


class ServingError(HubError):
    """Base of every serving error; an unexpected server-side failure unless a subclass says otherwise."""

    status_code: int = 500
    reason: str = "internal"


class ModelNotFoundError(ServingError):
    """No such model or version is loaded (or known to the repository)."""

    status_code = 404
    reason = "not_found"


class InvalidInputError(ServingError):
    """The request is malformed or does not match the model's inputs (name, datatype, shape)."""

    status_code = 400
    reason = "invalid_input"


class ModelUnavailableError(ServingError):
    """The model is known but cannot take requests now (loading, unloading, or failed to load)."""

    status_code = 503
    reason = "unavailable"


class OverloadedError(ModelUnavailableError):
    """The model's queue is full; the client should retry after ``retry_after`` seconds."""

    reason = "overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class InferenceTimeoutError(ServingError):
    """The request's deadline passed before its result was ready."""

    status_code = 504
    reason = "timeout"


class BackendError(ServingError):
    """The runtime (ONNX Runtime, torch) failed to load or to run the model."""

    status_code = 500
    reason = "backend"
