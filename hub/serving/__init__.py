"""Cloud serving for heavy models: the Open Inference Protocol (KServe V2) over HTTP, with Triton-style
dynamic batching, ONNX Runtime and torch backends, Prometheus metrics and export to a Triton repository.

Exceptions (``status_code`` is the HTTP answer, mapped once in :func:`hub.serving.oip.error_response`)::

    HubError (hub.errors)
     └── ServingError                 500  unexpected server-side failure
          ├── ModelNotFoundError      404  no such model / version loaded or in the repository
          ├── InvalidInputError       400  malformed request, wrong input name / datatype / shape
          ├── ModelUnavailableError   503  loading, unloading, or server not ready
          │    └── OverloadedError    503  queue full; carries ``retry_after`` (Retry-After header)
          ├── InferenceTimeoutError   504  the request's deadline passed
          └── BackendError            500  the runtime failed to load or run the model
"""

from hub.serving.app import add_metrics_endpoint, create_app
from hub.serving.backends import Backend, load_backend
from hub.serving.batcher import DynamicBatcher
from hub.serving.config import BatchingConfig, ModelSpec, ServingConfig, TensorSpec
from hub.serving.errors import (
    BackendError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    OverloadedError,
    ServingError,
)
from hub.serving.manager import ModelManager, ServedModel
from hub.serving.metrics import ServingMetrics
from hub.serving.oip import build_router, error_response
from hub.serving.repository import ModelRef, ModelRepository, StaticRepository, parse_model_arg
from hub.serving.triton import export_triton, to_pbtxt, triton_config

__all__ = [
    "Backend",
    "BackendError",
    "BatchingConfig",
    "DynamicBatcher",
    "InferenceTimeoutError",
    "InvalidInputError",
    "ModelManager",
    "ModelNotFoundError",
    "ModelRef",
    "ModelRepository",
    "ModelSpec",
    "ModelUnavailableError",
    "OverloadedError",
    "ServedModel",
    "ServingConfig",
    "ServingError",
    "ServingMetrics",
    "StaticRepository",
    "TensorSpec",
    "add_metrics_endpoint",
    "build_router",
    "create_app",
    "error_response",
    "export_triton",
    "load_backend",
    "parse_model_arg",
    "to_pbtxt",
    "triton_config",
]
