"""Fixtures for the serving tests: tiny models made here (ONNX, TorchScript, ExportedProgram), a gated
fake backend for deterministic queue tests, and a real uvicorn server on an ephemeral port."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from hub.serving import ModelSpec, ServingMetrics, TensorSpec

IN_FEATURES, OUT_FEATURES = 4, 3


@dataclass(frozen=True)
class TinyModels:
    """One MLP saved three ways, and its reference outputs."""

    onnx: Path
    torchscript: Path
    exported: Path
    reference: Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(IN_FEATURES, 8), torch.nn.ReLU(), torch.nn.Linear(8, OUT_FEATURES)
    ).eval()
    out = tmp_path_factory.mktemp("models")
    example = torch.randn(2, IN_FEATURES)
    dynamic_batch = ({0: torch.export.Dim("batch", max=1024)},)
    onnx_path = out / "mlp.onnx"
    torch.onnx.export(
        model,
        (example,),
        str(onnx_path),
        opset_version=18,
        input_names=["x"],
        output_names=["y"],
        dynamic_shapes=dynamic_batch,
        verbose=False,
    )
    ts_path = out / "mlp.pt"
    torch.jit.script(model).save(str(ts_path))
    pt2_path = out / "mlp.pt2"
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_batch)
    torch.export.save(program, str(pt2_path))

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(model(torch.from_numpy(x)).numpy())

    return TinyModels(onnx_path, ts_path, pt2_path, reference)


@dataclass
class GatedBackend:
    """A fake backend (y = 2x) that records batch sizes and can hold a batch until released."""

    gated: bool = False
    fail: bool = False
    platform: str = "fake"
    device: str = "cpu"
    inputs: tuple[TensorSpec, ...] = (TensorSpec(name="x", datatype="FP32", shape=(-1, 2)),)
    outputs: tuple[TensorSpec, ...] = (TensorSpec(name="y", datatype="FP32", shape=(-1, 2)),)
    batches: list[int] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    closed: bool = False

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(int(x.shape[0]))
        self.entered.set()
        if self.gated and not self.release.wait(timeout=30):
            raise RuntimeError("test never released the gate")
        if self.fail:
            raise RuntimeError("boom")
        return {"y": x * 2}

    def close(self) -> None:
        self.closed = True


def fake_spec(name: str = "fake", version: str = "1", **batching: object) -> ModelSpec:
    """A spec for the fake backend (the path is never opened)."""
    return ModelSpec.model_validate({"name": name, "version": version, "path": "fake.onnx", "batching": batching})


@pytest.fixture
def metrics() -> ServingMetrics:
    return ServingMetrics(CollectorRegistry())


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A metric sample's value (0 when absent)."""
    return registry.get_sample_value(name, labels) or 0.0
