"""The demo's model: a small MLP trained on scikit-learn's digits in a few seconds on a CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.wire.bundle import BundleManifest, Postprocess, Preprocess, SelfTest, TensorSpec


@dataclass(frozen=True)
class TrainedDigits:
    """The trained model exported to ONNX, its pre-processing and held-out data."""

    onnx_path: Path
    mean: np.ndarray
    std: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    golden_x: np.ndarray
    golden_logits: np.ndarray
    accuracy: float


def train_digits(out_dir: Path, *, epochs: int = 60, seed: int = 0) -> TrainedDigits:
    """Train the classifier, export it with `converters.export_onnx`, and keep golden self-test vectors."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from converters import export_onnx

    torch.manual_seed(seed)
    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0) + 1e-3
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    features = torch.from_numpy((train_x - mean) / std)
    labels = torch.from_numpy(train_y)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(features), labels)
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy((test_x - mean) / std)).numpy()
    accuracy = float((logits.argmax(1) == test_y).mean())
    onnx_path = export_onnx(model, (torch.zeros(1, 64),), out_dir / "digits.onnx")
    return TrainedDigits(onnx_path, mean, std, test_x, test_y, test_x[:16], logits[:16], accuracy)


def digits_manifest(
    trained: TrainedDigits, version: str, *, target: str = "x86-onnx-cpu", atol: float = 1e-4, heavy: bool = False
) -> BundleManifest:
    """The bundle manifest of the digits model: its pre-processing, labels and self-test tolerance."""
    return BundleManifest(
        model="digits",
        version=version,
        target=target,
        runtime="onnxruntime",
        precision="fp32",
        model_file="model.onnx",
        input=TensorSpec(name="input", dtype="float32", shape=[-1, 64]),
        preprocess=Preprocess(kind="affine", mean=trained.mean.tolist(), std=trained.std.tolist()),
        postprocess=Postprocess(labels=[str(i) for i in range(10)]),
        selftest=SelfTest(atol=atol, rtol=1e-3),
        feature_names=[f"f{i}" for i in range(64)],
        heavy=heavy,
        created_at=time.time(),
    )


def digits_reference(trained: TrainedDigits) -> dict[str, Any]:
    """The drift reference profile of the training distribution (per-pixel sketches)."""
    from fleet.telemetry import ReferenceProfile

    columns = {f"f{i}": trained.test_x[:, i] for i in range(trained.test_x.shape[1])}
    return ReferenceProfile.from_arrays(columns).model_dump(mode="json")
