"""Errors of the device agent. Each message says what was wrong and where.

Exceptions::

    AgentError
     ├── AgentConfigError       invalid agent.toml or settings
     ├── ReplayedOrderError     a deployment order older than the last accepted one (a replay)
     ├── TransferError          a bundle download could not complete (timeout, wrong size or digest,
     │                          refused by the hub)
     ├── StorageError           the device's disk refused a write (a full disk says ENOSPC)
     ├── VerificationError      TUF refused the bundle or its metadata: unsigned, tampered, expired,
     │                          rolled back, or signed for another model/target
     ├── BundleError            the archive or its manifest is malformed or unsafe
     ├── RuntimeUnavailableError   the bundle's runtime cannot run on this device
     ├── HealthCheckError       the candidate failed its self-test or its latency budget
     ├── CertificateError       the device's TLS certificate could not be read or renewed
     └── InferenceError         a request that cannot be answered (bad input shape or type)
          ├── NonFiniteError     an input or an answer is NaN or infinite
          └── BatchTooLargeError more rows in one request than the configured cap
"""

import errno


class AgentError(Exception):
    """Base class for agent errors."""


class AgentConfigError(AgentError, ValueError):
    """Invalid agent configuration."""


class CertificateError(AgentError):
    """The device's TLS certificate could not be read or renewed."""


class ReplayedOrderError(AgentError):
    """A deployment order older than one already accepted: a replay, refused."""


class TransferError(AgentError):
    """A bundle transfer failed."""


class StorageError(AgentError):
    """A write to the device's disk failed; the message names the errno (ENOSPC for a full disk)."""


class VerificationError(AgentError):
    """The bundle or its metadata failed TUF verification."""


class BundleError(AgentError, ValueError):
    """A malformed or unsafe bundle archive."""


class RuntimeUnavailableError(AgentError):
    """The bundle's runtime is not available on this device."""


class HealthCheckError(AgentError):
    """The candidate model failed its health check."""


class InferenceError(AgentError, ValueError):
    """The request cannot be answered."""


def storage_error(action: str, exc: OSError) -> StorageError:
    """A `StorageError` saying what could not be written and why, e.g. ``cannot write x: ENOSPC (No space...)``."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = f"{code} ({exc.strerror})" if code and exc.strerror else str(exc)
    return StorageError(f"{action}: {reason}")


class NonFiniteError(InferenceError):
    """An input (or the model's output for it) is NaN or infinite."""


class BatchTooLargeError(InferenceError):
    """A request carries more rows than the device accepts at once."""
