"""A servable model: the bundle's pre-processing, the runtime, and post-processing into answers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.bundle import LoadedBundle
from agent.errors import InferenceError
from agent.runtimes import Runtime, load_runtime
from fleet.wire.bundle import BundleManifest, Postprocess

_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int32": np.int32,
    "int64": np.int64,
}


@dataclass(frozen=True)
class Answer:
    """One prediction."""

    label: str
    index: int
    confidence: float
    scores: list[float]


class ServableModel:
    """Applies the same transforms as training, runs the runtime and turns outputs into answers."""

    def __init__(self, bundle: LoadedBundle, sha256: str) -> None:
        self.manifest: BundleManifest = bundle.manifest
        self.sha256 = sha256
        self.bundle = bundle
        extra = {"weights": bundle.weights} if bundle.weights is not None else None
        self.runtime: Runtime = load_runtime(bundle.manifest, bundle.model_bytes, extra)
        pre = self.manifest.preprocess
        self._mean = np.asarray(pre.mean, dtype=np.float32)
        self._std = np.asarray(pre.std, dtype=np.float32)

    @property
    def version(self) -> str:
        """The model version this bundle carries."""
        return self.manifest.version

    def prepare(self, inputs: np.ndarray | list[object]) -> np.ndarray:
        """Validate shape and dtype against the manifest and apply the pre-processing."""
        spec = self.manifest.input
        try:
            batch = np.asarray(inputs, dtype=np.float32 if spec.dtype.startswith("float") else _DTYPES[spec.dtype])
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"input is not a numeric array: {exc}") from exc
        expected = spec.shape[1:]
        if batch.ndim == len(expected):
            batch = batch[None, ...]
        dims_ok = batch.ndim == len(spec.shape) and all(
            e in (-1, g) for e, g in zip(expected, batch.shape[1:], strict=True)
        )
        if not dims_ok:
            raise InferenceError(f"input shape {list(batch.shape)} does not match model input {spec.shape}")
        if self.manifest.preprocess.kind == "affine":
            batch = (batch * self.manifest.preprocess.scale - self._mean) / self._std
        return batch.astype(_DTYPES[spec.dtype], copy=False)

    def raw(self, inputs: np.ndarray | list[object]) -> np.ndarray:
        """Raw model outputs for a batch."""
        return self.runtime.run(self.prepare(inputs))

    def answers(self, outputs: np.ndarray) -> list[Answer]:
        """Post-process raw outputs (softmax, labels) into answers."""
        return postprocess(outputs, self.manifest.postprocess)

    def predict(self, inputs: np.ndarray | list[object]) -> list[Answer]:
        """Answers for a batch of raw inputs."""
        return self.answers(self.raw(inputs))


def postprocess(outputs: np.ndarray, post: Postprocess) -> list[Answer]:
    """Answers from raw outputs, one per row: softmax when asked, the top class's label and confidence."""
    scores = outputs.reshape(outputs.shape[0], -1).astype(np.float64)
    if post.softmax:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    result = []
    for row in scores:
        index = int(row.argmax())
        label = post.labels[index] if index < len(post.labels) else str(index)
        result.append(Answer(label=label, index=index, confidence=float(row[index]), scores=row.tolist()))
    return result
