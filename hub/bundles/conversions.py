"""Register a conversion's variants under one model version, each as a signed bundle for its target.

`prepare_conversion` does the work that needs the converters and the variants' runtimes, where the conversion is
(``edgefleet models register-conversion`` uploads each result to the hub, `hub.bundles.upload`);
`register_conversion` publishes them on a hub in this process (the demo, tests).

Every variant's bundle carries the drift reference profile of the vectors file (its first 1,000 rows and the
first variant's answers on them), so `drift report` and the rollout gate work without a hand-made reference.
Golden self-test vectors come from running each variant on the preparing host on the given inputs, so a device's
health check proves its runtime reproduces what the hub measured. A variant that could not run here (Core ML
on Linux, TensorRT without a GPU) or that failed or missed its accuracy budget is skipped with the reason;
it is never registered as if it had passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fleet.wire.bundle import CONTRACT_NAME, BundleManifest, Postprocess, SelfTest, TensorSpec
from fleet.wire.contract import DataContract, load_contract
from hub.bundles.reference import reference_profile
from hub.errors import InvalidRequestError
from targets import get_target

if TYPE_CHECKING:
    from hub.app import Hub

_FORMATS_WITH_WEIGHTS = {"openvino": ".bin"}
#: Rows of the vectors file the drift reference is built from (each run through the model once).
REFERENCE_ROWS = 1000


@dataclass
class ConversionRegistration:
    """What was registered and what was skipped, with reasons."""

    model: str
    version: str
    registered: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedVariant:
    """One variant ready to publish: its manifest, files, golden vectors, drift reference and measured metrics."""

    name: str
    manifest: BundleManifest
    model_path: Path
    weights_path: Path | None
    inputs: np.ndarray
    outputs: np.ndarray
    reference: dict[str, Any]
    metrics: dict[str, Any]


@dataclass
class PreparedConversion:
    """The usable variants of a conversion, the skipped ones with reasons, and the contract bundles carry."""

    model: str
    version: str
    variants: list[PreparedVariant] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    contract: DataContract | None = None


def register_conversion(
    hub: Hub,
    directory: Path,
    *,
    version: str,
    vectors: Path,
    model: str | None = None,
    labels: list[str] | None = None,
    count: int = 16,
    contract: DataContract | None = None,
) -> ConversionRegistration:
    """Publish every usable variant in ``directory`` (an ``edgefleet convert`` output) as ``model:version``
    on ``hub``."""
    prepared = prepare_conversion(
        directory, version=version, vectors=vectors, model=model, labels=labels, count=count, contract=contract
    )
    result = ConversionRegistration(prepared.model, version, skipped=prepared.skipped)
    for variant in prepared.variants:
        published = hub.publish(
            variant.manifest,
            variant.model_path,
            variant.inputs,
            variant.outputs,
            metrics=variant.metrics,
            weights_path=variant.weights_path,
            reference=variant.reference,
            contract=prepared.contract,
        )
        result.registered.append(
            {"variant": variant.name, "bundle_sha256": published.bundle_sha256, "tuf_target": published.tuf_target}
        )
    return result


def prepare_conversion(
    directory: Path,
    *,
    version: str,
    vectors: Path,
    model: str | None = None,
    labels: list[str] | None = None,
    count: int = 16,
    contract: DataContract | None = None,
) -> PreparedConversion:
    """Run every usable variant in ``directory`` (an ``edgefleet convert`` output) on ``vectors`` and build its
    manifest as ``model:version``.

    Bundles carry ``contract``, else the ``contract.json`` that ``convert --contract`` left in ``directory``.
    """
    from converters import load_report
    from converters.data import load_npz
    from converters.runners import load_runner
    from converters.types import Artifact

    report = load_report(directory)
    if contract is None and (directory / CONTRACT_NAME).is_file():
        contract = load_contract(directory / CONTRACT_NAME)
    name = model or report.model
    result = PreparedConversion(name, version, contract=contract)
    input_names = list(report.source.get("inputs", {})) or ["input"]
    if len(input_names) != 1:
        raise InvalidRequestError(f"bundles carry one input tensor; {report.model} takes {input_names}")
    dataset = load_npz(vectors, input_names)
    reference_inputs = np.asarray(dataset.inputs[input_names[0]])[:REFERENCE_ROWS]
    inputs = reference_inputs[:count]
    reference_outputs: np.ndarray | None = None  # from the first variant run: every variant shares the reference
    for variant in report.variants:
        if variant.status != "ok" or variant.path is None:
            result.skipped.append({"variant": variant.name, "reason": variant.reason or f"status {variant.status}"})
            continue
        if not variant.executed:
            result.skipped.append(
                {"variant": variant.name, "reason": "not executed on this host, so it has no golden outputs"}
            )
            continue
        target = get_target(variant.target)
        model_path = report.artifact_path(variant)
        files: tuple[str, ...] = (model_path.name,)
        weights_suffix = _FORMATS_WITH_WEIGHTS.get(variant.format or "")
        weights_path = model_path.with_suffix(weights_suffix) if weights_suffix else None
        if weights_path is not None:
            files += (weights_path.name,)
        artifact = Artifact(
            root=model_path.parent,
            main=model_path.name,
            format=variant.format,  # type: ignore[arg-type]
            precision=variant.precision,
            files=files,
            meta=variant.meta,
        )
        runner = load_runner(target, artifact)
        outputs = np.stack([np.asarray(runner({input_names[0]: row[None, ...]}))[0] for row in inputs])
        if reference_outputs is None:
            reference_outputs = np.stack(
                [np.asarray(runner({input_names[0]: row[None, ...]}))[0] for row in reference_inputs]
            )
        quantised = variant.precision not in ("fp32", "fp16")
        dtype = str(variant.meta.get("input_dtypes", ["float32"])[0])
        manifest = BundleManifest(
            model=name,
            version=version,
            target=variant.target,
            runtime=target.runtime,
            precision=variant.precision,
            model_file=model_path.name,
            weights_file=weights_path.name if weights_path else None,
            input=TensorSpec(
                name=input_names[0],
                dtype=dtype,  # type: ignore[arg-type]
                # a variant exported with a fixed batch of 1 makes the agent run requests row by row
                shape=[-1 if variant.meta.get("batch_dynamic", True) else 1, *inputs.shape[1:]],
            ),
            postprocess=Postprocess(labels=labels or []),
            selftest=SelfTest(
                atol=1e-3 if quantised else 1e-4,
                rtol=1e-2 if quantised else 1e-3,
                min_top1_agreement=0.9 if quantised else 1.0,
            ),
        )
        metrics = {
            k: getattr(variant, k)
            for k in (
                "accuracy",
                "max_abs_error",
                "top1_agreement",
                "latency_ms_p50",
                "latency_ms_p99",
                "size_bytes",
                "peak_memory_mb",
            )
        }
        reference = reference_profile(manifest, reference_inputs, reference_outputs)
        result.variants.append(
            PreparedVariant(variant.name, manifest, model_path, weights_path, inputs, outputs, reference, metrics)
        )
    return result
