"""Honest measurement: the precision a variant is labelled with is the one it runs in, sizes count
every file, memory is the runtime's own resident growth in a fresh process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.convert import convert
from converters.data import Dataset

torch = pytest.importorskip("torch")


class Wide(torch.nn.Module):
    """An MLP with 4.2 M float32 weights (16 MiB)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    data = Dataset({"input": np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)})
    out = tmp_path_factory.mktemp("m") / "out"
    return convert(
        Wide().eval(),
        ["intel-openvino", "x86-onnx-cpu", "torchscript-cpu"],
        out,
        example_inputs=(torch.zeros(1, 64),),
        calib=data,
        eval=data,
        precisions=["fp32", "int8"],
        measure_budget_s=0.2,
    )


def test_openvino_variants_run_in_the_precision_they_are_labelled_with(report) -> None:  # type: ignore[no-untyped-def]
    for precision in ("fp32", "int8"):
        variant = report.variant("intel-openvino", precision)
        assert variant.meta["inference_precision"] == "f32", variant.name  # never a silent bf16


def test_size_counts_every_file_of_a_variant(report) -> None:  # type: ignore[no-untyped-def]
    variant = report.variant("intel-openvino", "fp32")
    directory = report.root / Path(variant.path).parent
    assert variant.size_bytes == sum(p.stat().st_size for p in directory.iterdir())
    assert variant.size_bytes > 16 * 2**20  # the weights in model.bin, not only model.xml


def test_peak_memory_is_the_runtimes_resident_growth(report) -> None:  # type: ignore[no-untyped-def]
    for name in ("x86-onnx-cpu", "intel-openvino", "torchscript-cpu"):
        variant = report.variant(name, "fp32")
        assert variant.peak_memory_mb > 12, (variant.name, variant.peak_memory_mb)  # 16 MiB of weights
        assert variant.meta.get("inference_precision") in (None, "f32")
