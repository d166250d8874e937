"""`convert`: one source model to a checked, measured variant per target, written atomically.

The jobs live in their own modules: `plan` (which variants, which pipelines), `build` (steps through
the cache), `search` (quantization settings under an accuracy budget), `check` (evaluate, measure),
`variants` (files and per-variant report) and `report` (``report.json`` and the model card).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters import variants
from converters.cache import StepCache, distribution_version
from converters.data import Dataset, load_npz, synthetic_dataset
from converters.errors import ConversionError
from converters.evaluate import accuracy_of
from converters.options import ConvertOptions, DataArg
from converters.plan import VariantPlan, plan_variants
from converters.report import ConversionReport, DataInfo, VariantReport, write_report
from converters.search import build_variant
from converters.session import Session
from converters.source import SourceModel, from_module, load_source

__all__ = ["ConvertOptions", "VariantPlan", "convert", "plan_variants"]

TOOLCHAINS = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "coremltools", "litert_torch", "ai_edge_litert")


def convert(
    model: Any,
    targets: Sequence[str],
    out: Path,
    options: ConvertOptions | None = None,
    **overrides: Any,
) -> ConversionReport:
    """Convert ``model`` for every target in ``targets`` and write the variants, ``report.json`` and
    ``MODEL_CARD.md`` into ``out``.

    ``model`` is an ``nn.Module`` (with ``example_inputs``), a `SourceModel`, or a path to a ``.pt2``,
    TorchScript or ``.onnx`` file. Options come as a `ConvertOptions` and/or keyword overrides of its
    fields. Everything is written to a temporary sibling of ``out`` and renamed into place at the end,
    so a failure leaves ``out`` as it was. A variant that cannot be built is recorded as ``failed``
    with its reason while the others are built; the first error is raised only when no variant was
    built (unless ``keep_going``) or, with ``strict``, at the first failure.
    """
    opts = ConvertOptions.build(options, overrides)
    out = Path(out)
    source = _load(model, opts)
    integer_inputs = any(a.dtype.kind in "iu" for a in source.examples.values())
    plans = plan_variants(targets, precisions=opts.precisions, pipelines=opts.pipelines, integer_inputs=integer_inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    session = _start(source, opts, out)
    try:
        built = [_variant(session, plan) for plan in plans]
        report = _report(session, [v for v, _ in built])
        errors = [exc for _, exc in built if exc is not None]
        if errors and len(errors) == len(built) and not opts.keep_going:
            raise errors[0]
        write_report(report, session.staging)
        _swap_into_place(session.staging, out)
        report.root = out.resolve()
        return report
    finally:
        shutil.rmtree(session.staging, ignore_errors=True)
        shutil.rmtree(session.scratch, ignore_errors=True)


def _start(source: SourceModel, opts: ConvertOptions, out: Path) -> Session:
    """Load the data, run the source on the evaluation data and create the working directories."""
    names = source.input_names
    calibration = _as_dataset(opts.calib, names)
    evaluation = _as_dataset(opts.eval, names)
    calibration_data = calibration or evaluation or synthetic_dataset(source.examples, 64)
    evaluation_data = (evaluation or calibration or synthetic_dataset(source.examples, 32, seed=1)).head(
        opts.eval_limit
    )
    opts.notify("source", source.name, f"running the source on {len(evaluation_data)} evaluation samples")
    reference = source.reference(evaluation_data)
    return Session(
        options=opts,
        source=source,
        calibration=calibration_data,
        evaluation=evaluation_data,
        train=_as_dataset(opts.train, names),
        reference=reference,
        source_accuracy=accuracy_of(reference, evaluation_data.labels),
        cache=StepCache(opts.cache_dir),
        staging=Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent)),
        scratch=Path(tempfile.mkdtemp(prefix=f".{out.name}.work-", dir=out.parent)),
    )


def _variant(session: Session, plan: VariantPlan) -> tuple[VariantReport, ConversionError | None]:
    """Build one variant; a failure is recorded (or raised with ``strict``)."""
    session.notify("start", plan.name, " → ".join(s.type for s in plan.pipeline.steps))
    error = None
    try:
        variant = build_variant(session, plan)
    except ConversionError as exc:
        if exc.target is None:
            exc.target = plan.target.name
        if session.options.strict:
            raise
        variant, error = variants.failed(plan, exc), exc
    session.notify("done", plan.name, variant.status)
    return variant, error


def _report(session: Session, built: list[VariantReport]) -> ConversionReport:
    source = session.source
    return ConversionReport(
        model=source.name,
        source={
            "kind": source.kind,
            "path": str(source.path) if source.path else None,
            "sha256": source.digest,
            "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in source.examples.items()},
            "dynamic_axes": {k: dict(v) for k, v in source.dynamic_axes.items()},
        },
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        host={
            "platform": platform.system(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "threads": session.threads,
        },
        toolchains={m: distribution_version(m) for m in TOOLCHAINS},
        max_accuracy_drop=session.budget,
        evaluation=_data_info(session.evaluation),
        calibration=_data_info(session.calibration),
        source_accuracy=session.source_accuracy,
        variants=built,
    )


def _data_info(data: Dataset) -> DataInfo:
    return DataInfo(origin=data.origin, samples=len(data), labels=data.labels is not None)


def _as_dataset(data: DataArg, names: Sequence[str]) -> Dataset | None:
    if data is None:
        return None
    if isinstance(data, Dataset):
        return data.for_inputs(names)
    return load_npz(Path(data), names)


def _load(model: Any, opts: ConvertOptions) -> SourceModel:
    if isinstance(model, SourceModel):
        return model
    if isinstance(model, (str, Path)):
        probe = None
        data = opts.calib if opts.calib is not None else opts.eval
        if isinstance(data, Dataset):
            probe = data
        elif data is not None:
            # input names are unknown before loading: peek at the file's arrays in order
            with np.load(Path(data)) as archive:
                arrays = {k: archive[k] for k in archive.files if k not in ("labels", "label", "y")}
            probe = Dataset(arrays, origin=str(data))
        return load_source(Path(model), examples=probe)
    if opts.example_inputs is None:
        raise ConversionError("converting an nn.Module needs example_inputs")
    return from_module(
        model,
        tuple(opts.example_inputs),
        name=opts.name or type(model).__name__,
        input_names=opts.input_names,
        output_names=opts.output_names,
        dynamic_axes=opts.dynamic_axes,
    )


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with renames only (the old output is removed afterwards)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
