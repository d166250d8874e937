"""The one registry of known targets. New hardware is one new entry in ``_PROFILES``."""

from __future__ import annotations

from targets.errors import UnknownTargetError
from targets.profile import Target

X86_ONNX = Target(
    name="x86-onnx-cpu",
    runtime="onnxruntime",
    precisions=("int8", "fp32"),
    memory_mb=8192,
    accelerator="cpu",
    latency_budget_ms=50.0,
    arch="x86_64",
    description="x86-64 Linux host or gateway running ONNX Runtime on the CPU",
    execution_providers=("CPUExecutionProvider",),
)
RPI4 = Target(
    name="rpi4-arm64",
    runtime="litert",
    precisions=("int8", "fp32"),
    memory_mb=4096,
    accelerator="cpu",
    latency_budget_ms=150.0,
    arch="aarch64",
    description="ARM64 Linux board, Raspberry Pi 4 class, running LiteRT",
)
MCU_INT8 = Target(
    name="mcu-int8",
    runtime="litert",
    precisions=("int8",),
    memory_mb=1,
    accelerator="mcu",
    latency_budget_ms=500.0,
    arch="armv7em",
    description="Microcontroller class: LiteRT full-integer int8 with int8 input and output",
    int8_io=True,
    heavy_param_limit=250_000,
)
INTEL_OPENVINO = Target(
    name="intel-openvino",
    runtime="openvino",
    precisions=("int8", "fp16", "fp32"),
    memory_mb=8192,
    accelerator="cpu",
    latency_budget_ms=50.0,
    arch="x86_64",
    description="Intel CPU, iGPU or NPU running OpenVINO",
    execution_providers=("CPU", "GPU", "NPU"),
)
APPLE_COREML = Target(
    name="apple-coreml",
    runtime="coreml",
    precisions=("fp16", "int8", "palettized"),
    memory_mb=6144,
    accelerator="ane",
    latency_budget_ms=30.0,
    arch="arm64",
    description="Apple Core ML mlprogram on iPhone and Mac (Neural Engine, GPU or CPU)",
)
JETSON = Target(
    name="jetson-orin",
    runtime="onnxruntime",
    precisions=("fp16", "fp32"),
    memory_mb=8192,
    accelerator="gpu",
    latency_budget_ms=20.0,
    arch="aarch64",
    description="NVIDIA Jetson running ONNX Runtime with the TensorRT or CUDA execution provider, fp16",
    execution_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
)
CLOUD_GPU = Target(
    name="cloud-gpu",
    runtime="onnxruntime",
    precisions=("fp16", "fp32"),
    memory_mb=81920,
    accelerator="gpu",
    latency_budget_ms=200.0,
    arch="x86_64",
    description="Cloud GPU serving tier in the hub: heavy models that devices offload to",
    execution_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    heavy_param_limit=10_000_000_000,
    tags=("serving",),
)
TORCHSCRIPT_CPU = Target(
    name="torchscript-cpu",
    runtime="torchscript",
    precisions=("fp32",),
    memory_mb=8192,
    accelerator="cpu",
    latency_budget_ms=50.0,
    arch="x86_64",
    description="Linux host running TorchScript through libtorch",
)

_PROFILES = (X86_ONNX, RPI4, MCU_INT8, INTEL_OPENVINO, APPLE_COREML, JETSON, CLOUD_GPU, TORCHSCRIPT_CPU)
TARGETS: dict[str, Target] = {profile.name: profile for profile in _PROFILES}


def get_target(name: str) -> Target:
    """Return the profile called ``name`` or raise `UnknownTargetError` listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTargetError(name, list(TARGETS)) from None


def list_targets() -> list[Target]:
    """All known targets in registry order."""
    return list(TARGETS.values())
