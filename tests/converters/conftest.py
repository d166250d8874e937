"""Shared fixtures for converter tests: tiny trained models and data built offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from converters.data import Dataset  # noqa: E402
from tests.converters.converter_models import TinyCNN, TinyEncoder, TinyMLP  # noqa: E402


@dataclass
class Trained:
    model: Any
    example: tuple[Any, ...]
    calib: Dataset
    eval: Dataset
    train: Dataset


def _fit(model: Any, inputs: np.ndarray, labels: np.ndarray, epochs: int, lr: float = 1e-2) -> Any:
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(inputs), torch.from_numpy(labels)
    model.train()
    for _ in range(epochs):
        for start in range(0, len(x), 64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[start : start + 64]), y[start : start + 64]).backward()
            optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


@pytest.fixture(scope="session")
def cnn(digits: tuple[np.ndarray, np.ndarray]) -> Trained:
    images, labels = digits
    x = images[:, None]
    torch.manual_seed(0)
    model = _fit(TinyCNN(), x[:1200], labels[:1200], epochs=4)
    return Trained(
        model,
        (torch.from_numpy(x[:1]),),
        Dataset({"input": x[:128]}),
        Dataset({"input": x[1400:1600]}, labels[1400:1600]),
        Dataset({"input": x[:1200]}, labels[:1200]),
    )


@pytest.fixture(scope="session")
def mlp(digits: tuple[np.ndarray, np.ndarray]) -> Trained:
    images, labels = digits
    x = images.reshape(len(images), -1)
    torch.manual_seed(0)
    model = _fit(TinyMLP(), x[:1200], labels[:1200], epochs=6)
    return Trained(
        model,
        (torch.from_numpy(x[:1]),),
        Dataset({"input": x[:128]}),
        Dataset({"input": x[1400:1600]}, labels[1400:1600]),
        Dataset({"input": x[:1200]}, labels[:1200]),
    )


@pytest.fixture(scope="session")
def encoder() -> Trained:
    """A tiny encoder trained to name the most frequent token group (token // 8) of a sequence."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, TinyEncoder.vocab, size=(800, 12)).astype(np.int64)
    counts = np.stack([(ids // 8 == g).sum(1) for g in range(4)], axis=1)
    labels = counts.argmax(1).astype(np.int64)
    torch.manual_seed(0)
    model = _fit(TinyEncoder(), ids[:600], labels[:600], epochs=6, lr=5e-3)
    return Trained(
        model,
        (torch.from_numpy(ids[:1]),),
        Dataset({"input_ids": ids[:128]}),
        Dataset({"input_ids": ids[600:800]}, labels[600:800]),
        Dataset({"input_ids": ids[:600]}, labels[:600]),
    )


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One step cache for tests that do not assert on caching (repeated exports are skipped)."""
    return tmp_path_factory.mktemp("step-cache")
