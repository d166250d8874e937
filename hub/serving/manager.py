"""Loaded models: each version a backend plus its dynamic batcher, loaded and unloaded through a
:class:`ModelRepository`, several models and versions side by side."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from hub.serving.backends import Backend, load_backend
from hub.serving.batcher import Arrays, DynamicBatcher
from hub.serving.config import BatchingConfig, ModelSpec, TensorSpec
from hub.serving.errors import InvalidInputError, ModelNotFoundError, ServingError
from hub.serving.metrics import ModelMetrics, ServingMetrics
from hub.serving.repository import ModelRepository, version_key
from hub.serving.tensors import v2_datatype

log = logging.getLogger(__name__)

State = Literal["LOADING", "READY", "UNLOADING", "UNAVAILABLE"]
Loader = Callable[[ModelSpec], Backend]


def _tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape or (-1,))}


@dataclass(eq=False)
class ServedModel:
    """One loaded model version: its spec, backend, batcher and metrics."""

    spec: ModelSpec
    backend: Backend
    batcher: DynamicBatcher
    metrics: ModelMetrics

    @property
    def name(self) -> str:
        """Model name."""
        return self.spec.name

    @property
    def version(self) -> str:
        """Model version."""
        return self.spec.version

    @property
    def batching(self) -> BatchingConfig:
        """The effective batching configuration (batching is off for models without a batch dim)."""
        return self.batcher.config

    @property
    def output_names(self) -> list[str]:
        """Output names in model order."""
        return [o.name for o in self.backend.outputs]

    def check_inputs(self, arrays: Arrays) -> Arrays:
        """Check names, datatypes and shapes against the model's inputs; raises InvalidInputError."""
        expected = {s.name: s for s in self.backend.inputs}
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        if missing or extra:
            raise InvalidInputError(
                f"model {self.name!r} takes inputs {sorted(expected)}; missing {missing}, unknown {extra}"
            )
        for name, arr in arrays.items():
            spec = expected[name]
            datatype = v2_datatype(arr.dtype)
            if datatype != spec.datatype:
                raise InvalidInputError(f"input {name!r} must be {spec.datatype}, got {datatype}")
            if spec.shape is None:
                continue
            if len(spec.shape) != arr.ndim or any(
                want not in (-1, got) for want, got in zip(spec.shape, arr.shape, strict=True)
            ):
                raise InvalidInputError(f"input {name!r} has shape {list(arr.shape)}, model expects {list(spec.shape)}")
        return arrays

    async def infer(self, arrays: Arrays, timeout_s: float | None = None) -> Arrays:
        """Validate, batch and run one request (``timeout_s`` defaults to the model's default timeout)."""
        self.check_inputs(arrays)
        timeout = timeout_s if timeout_s is not None else _ms(self.batching.default_timeout_ms)
        return await self.batcher.submit(arrays, timeout)

    @contextmanager
    def observe(self) -> Iterator[None]:
        """Count one request, its duration and its failure reason, if it fails, in the metrics."""
        started = time.perf_counter()
        self.metrics.requests.inc()
        try:
            yield
        except ServingError as exc:
            self.metrics.failure(exc.reason)
            raise
        finally:
            self.metrics.request_seconds.observe(time.perf_counter() - started)

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """V2 model metadata."""
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.backend.platform,
            "inputs": [_tensor_meta(s) for s in self.backend.inputs],
            "outputs": [_tensor_meta(s) for s in self.backend.outputs],
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else value / 1000.0


def _batchable(backend: Backend) -> bool:
    return all(s.shape is None or (len(s.shape) > 0 and s.shape[0] == -1) for s in backend.inputs)


class ModelManager:
    """Loads model versions from ``repository`` and routes requests to them."""

    def __init__(self, repository: ModelRepository, metrics: ServingMetrics, *, loader: Loader = load_backend) -> None:
        self.repository = repository
        self._metrics = metrics
        self._loader = loader
        self._models: dict[tuple[str, str], ServedModel] = {}
        self._states: dict[tuple[str, str], tuple[State, str]] = {}
        self._lock: asyncio.Lock | None = None
        self.ready = False

    async def start(self, specs: Iterable[ModelSpec] = ()) -> None:
        """Load the start-up models, then report ready."""
        for spec in specs:
            await self.load_spec(spec)
        self.ready = True

    async def close(self) -> None:
        """Unload everything."""
        self.ready = False
        for name in sorted({n for n, _ in self._models}):
            await self.unload(name)

    async def load(self, name: str, version: str | None = None) -> ServedModel:
        """Resolve ``name`` (at ``version`` or the latest) through the repository and load it."""
        return await self.load_spec(self.repository.resolve(name, version))

    async def load_spec(self, spec: ModelSpec) -> ServedModel:
        """Load ``spec``; an already loaded same version is replaced once the new one is up."""
        async with self._guard():
            key = (spec.name, spec.version)
            self._states[key] = ("LOADING", "")
            try:
                backend = await asyncio.to_thread(self._loader, spec)
            except ServingError as exc:
                self._states[key] = ("UNAVAILABLE", str(exc))
                raise
            batching = spec.batching
            if batching.max_batch_size > 0 and not _batchable(backend):
                log.warning("model %s:%s has a fixed first dimension; batching off", *key)
                batching = batching.model_copy(update={"max_batch_size": 0, "preferred_batch_sizes": ()})
            metrics = self._metrics.bind(*key)
            batcher = DynamicBatcher(backend.infer, batching, metrics, name=f"{spec.name}:{spec.version}")
            batcher.start()
            old = self._models.get(key)
            self._models[key] = ServedModel(spec, backend, batcher, metrics)
            self._states[key] = ("READY", "")
            self._metrics.models_loaded.set(len(self._models))
            log.info("loaded %s:%s (%s on %s)", spec.name, spec.version, backend.platform, backend.device)
        if old is not None:
            await self._retire(old)
        return self._models[key]

    async def unload(self, name: str, version: str | None = None) -> list[str]:
        """Unload one version, or every version of ``name``; returns the versions unloaded."""
        async with self._guard():
            keys = [k for k in self._models if k[0] == name and (version is None or k[1] == version)]
            if not keys:
                raise ModelNotFoundError(f"model {name!r}{_at(version)} is not loaded")
            retired = [self._models.pop(k) for k in keys]
            for k in keys:
                self._states[k] = ("UNLOADING", "")
            self._metrics.models_loaded.set(len(self._models))
        for model in retired:
            await self._retire(model)
            self._states.pop((model.name, model.version), None)
        return [m.version for m in retired]

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The loaded model ``name`` at ``version`` (the highest loaded version when ``None``)."""
        if version is not None:
            model = self._models.get((name, version))
            if model is None:
                raise ModelNotFoundError(f"model {name!r}{_at(version)} is not loaded")
            return model
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        return self._models[(name, versions[-1])]

    def versions(self, name: str) -> list[str]:
        """Loaded versions of ``name``, lowest first."""
        return sorted((v for n, v in self._models if n == name), key=version_key)

    def loaded(self) -> list[ServedModel]:
        """Every loaded model version."""
        return list(self._models.values())

    def index(self) -> list[dict[str, str]]:
        """The repository index with each version's state (Triton's repository index format)."""
        keys = {(r.name, r.version) for r in self.repository.index()} | set(self._states)
        rows: list[dict[str, str]] = []
        for name, version in sorted(keys, key=lambda k: (k[0], version_key(k[1]))):
            state, reason = self._states.get((name, version), ("UNAVAILABLE", "unloaded"))
            rows.append({"name": name, "version": version, "state": state, "reason": reason})
        return rows

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _retire(self, model: ServedModel) -> None:
        await model.batcher.close()
        self._metrics.unbind(model.name, model.version)
        await asyncio.to_thread(model.backend.close)


def _at(version: str | None) -> str:
    return "" if version is None else f" version {version!r}"
