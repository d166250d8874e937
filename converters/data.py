"""Calibration, evaluation and training data: ``.npz`` files of input arrays plus optional labels."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import InvalidDataError

LABEL_KEYS = ("labels", "label", "y")


@dataclass(frozen=True)
class Dataset:
    """Named input arrays sharing a first (sample) dimension, and optional integer labels."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    origin: str = "memory"

    def __post_init__(self) -> None:
        sizes = {name: len(array) for name, array in self.inputs.items()}
        if not sizes:
            raise InvalidDataError(f"{self.origin}: no input arrays")
        if len(set(sizes.values())) != 1:
            raise InvalidDataError(f"{self.origin}: inputs disagree on sample count: {sizes}")
        if self.labels is not None and len(self.labels) != len(self):
            raise InvalidDataError(f"{self.origin}: {len(self.labels)} labels for {len(self)} samples")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def digest(self) -> str:
        """sha256 over names, dtypes, shapes and bytes of inputs and labels (for cache keys)."""
        sha = hashlib.sha256()
        for name in sorted(self.inputs):
            array = np.ascontiguousarray(self.inputs[name])
            sha.update(f"{name}|{array.dtype}|{array.shape}|".encode())
            sha.update(array.tobytes())
        if self.labels is not None:
            sha.update(b"labels|")
            sha.update(np.ascontiguousarray(self.labels).tobytes())
        return sha.hexdigest()

    def for_inputs(self, names: Sequence[str]) -> Dataset:
        """This data keyed by the model's input ``names`` (matched by name, else by position)."""
        if list(self.inputs) == list(names):
            return self
        if set(names) <= set(self.inputs):
            return Dataset({n: self.inputs[n] for n in names}, self.labels, self.origin)
        if len(self.inputs) != len(names):
            raise InvalidDataError(
                f"{self.origin}: the model takes inputs {list(names)}, the data has {list(self.inputs)}"
            )
        return Dataset(dict(zip(names, self.inputs.values(), strict=True)), self.labels, self.origin)

    def head(self, count: int) -> Dataset:
        """The first ``count`` samples."""
        labels = None if self.labels is None else self.labels[:count]
        return Dataset({k: v[:count] for k, v in self.inputs.items()}, labels, self.origin)

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Input dicts of at most ``size`` samples, in order."""
        for start in range(0, len(self), size):
            yield {name: array[start : start + size] for name, array in self.inputs.items()}

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """One sample as a batch of one."""
        return {name: array[index : index + 1] for name, array in self.inputs.items()}


def load_npz(path: Path, input_names: Sequence[str]) -> Dataset:
    """Read ``path`` into a `Dataset` whose inputs are keyed by ``input_names``.

    Arrays named after the model's inputs are used as such; otherwise the non-label arrays are taken
    in file order. ``labels`` (or ``label``/``y``) is optional.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as exc:
        raise InvalidDataError(f"data file {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise InvalidDataError(f"{path} is not a readable .npz file: {exc}") from exc
    labels = next((arrays.pop(key) for key in LABEL_KEYS if key in arrays), None)
    if all(name in arrays for name in input_names):
        inputs = {name: arrays[name] for name in input_names}
    else:
        candidates = list(arrays.values())
        if len(candidates) != len(input_names):
            raise InvalidDataError(
                f"{path}: the model takes inputs {list(input_names)} but the file holds "
                f"{sorted(arrays)}; name the arrays after the inputs"
            )
        inputs = dict(zip(input_names, candidates, strict=True))
    if labels is not None:
        labels = np.asarray(labels).reshape(len(labels), -1)[:, 0].astype(np.int64)
    return Dataset(inputs, labels, origin=str(path))


def synthetic_dataset(examples: Mapping[str, np.ndarray], count: int, seed: int = 0) -> Dataset:
    """Random inputs shaped like ``examples`` (batch replaced by ``count``), for when no data is given.

    Integer inputs (token ids) are drawn from ``[0, max(example) + 1)``.
    """
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for name, example in examples.items():
        shape = (count, *example.shape[1:])
        if np.issubdtype(example.dtype, np.integer):
            high = max(int(example.max()) + 1, 2)
            inputs[name] = rng.integers(0, high, size=shape).astype(example.dtype)
        elif example.dtype == np.bool_:
            inputs[name] = np.ones(shape, dtype=np.bool_)
        else:
            inputs[name] = rng.standard_normal(shape).astype(example.dtype)
    return Dataset(inputs, None, origin="synthetic")
