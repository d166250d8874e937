"""The conversion report: ``report.json`` first, a Markdown model card rendered from it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from converters.errors import ConversionError

REPORT_FILE = "report.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
SCHEMA_VERSION = 1

Status = Literal["ok", "out_of_budget", "not_executed", "failed"]


class StepRecord(BaseModel):
    """One step of a variant's pipeline: whether it came from the cache and how long it took."""

    type: str
    cached: bool
    seconds: float


class Trial(BaseModel):
    """One quantization setting tried by the accuracy-budget search."""

    pipeline: list[dict[str, Any]]
    quality_loss: float | None
    within_budget: bool | None
    top1_agreement: float | None = None
    accuracy: float | None = None
    max_abs_error: float | None = None
    latency_ms_p50: float | None = None  # set when several settings fit the budget and were timed
    error: str | None = None


class SearchReport(BaseModel):
    """The search under ``--max-accuracy-drop``: every trial, the chosen one and the closest miss."""

    budget: float
    metric: str
    trials: list[Trial]
    chosen: int | None
    closest_miss: int | None = None


class ErrorInfo(BaseModel):
    type: str
    message: str
    operator: str | None = None
    stage: str | None = None


class VariantReport(BaseModel):
    """One target variant: where it is, how close to the source it is, how fast it runs here."""

    model_config = ConfigDict(extra="forbid")

    target: str
    runtime: str
    precision: str
    format: str | None = None
    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    throughput_per_s: float | None = None
    load_time_ms: float | None = None
    peak_memory_mb: float | None = None
    executed: bool = False
    within_budget: bool | None = None
    status: Status = "failed"
    reason: str | None = None
    error: ErrorInfo | None = None
    pipeline: list[dict[str, Any]] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    search: SearchReport | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.target}/{self.precision}"


class DataInfo(BaseModel):
    origin: str
    samples: int
    labels: bool


class ConversionReport(BaseModel):
    """Everything one ``edgefleet convert`` produced. Paths are relative to the report's directory."""

    schema_version: int = SCHEMA_VERSION
    model: str
    source: dict[str, Any]
    created_at: str
    host: dict[str, Any]
    toolchains: dict[str, str]
    max_accuracy_drop: float | None
    evaluation: DataInfo
    calibration: DataInfo
    source_accuracy: float | None = None
    variants: list[VariantReport]
    contract: dict[str, Any] | None = None  # data contract check of calibration/evaluation data (hub's --contract)
    root: Path | None = Field(default=None, exclude=True)

    def variant(self, target: str, precision: str | None = None) -> VariantReport:
        """The variant for ``target`` (and ``precision``; else the first successful one for it)."""
        matches = [v for v in self.variants if v.target == target and (precision is None or v.precision == precision)]
        usable = [v for v in matches if v.path is not None]
        if not (usable or matches):
            raise KeyError(f"no variant for {target}" + (f"/{precision}" if precision else ""))
        return (usable or matches)[0]

    def artifact_path(self, variant: VariantReport) -> Path:
        """Absolute path of a variant's model file (needs a report loaded with `load_report`)."""
        if self.root is None or variant.path is None:
            raise ConversionError(f"variant {variant.name} has no file on disk")
        return self.root / variant.path

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory as its sorted (relative path, content hash) pairs."""
    if path.is_file():
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        return sha.hexdigest()
    sha = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        sha.update(str(item.relative_to(path)).encode() + b"\0" + tree_sha256(item).encode() + b"\n")
    return sha.hexdigest()


def load_report(directory: Path, *, verify: bool = True) -> ConversionReport:
    """Read ``directory/report.json``; with ``verify``, check each variant's file exists and matches its
    sha256. This is the hub's entry point for registering a conversion's variants."""
    directory = Path(directory)
    try:
        report = ConversionReport.model_validate_json((directory / REPORT_FILE).read_text())
    except FileNotFoundError as exc:
        raise ConversionError(f"{directory} holds no {REPORT_FILE}") from exc
    except ValidationError as exc:
        raise ConversionError(f"{directory / REPORT_FILE} is not a valid conversion report: {exc}") from exc
    report.root = directory.resolve()
    if verify:
        for variant in report.variants:
            if variant.path is None:
                continue
            path = directory / variant.path
            if not path.exists():
                raise ConversionError(f"variant {variant.name}: {path} is missing")
            if variant.sha256 and tree_sha256(path) != variant.sha256:
                raise ConversionError(f"variant {variant.name}: {path} does not match its sha256")
    return report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def render_model_card(report: ConversionReport) -> str:
    """A Markdown model card for the conversion, rendered from the report alone."""
    lines = [
        f"# {report.model}: converted variants",
        "",
        f"- Source: {report.source.get('kind')} `{report.source.get('path') or report.model}` "
        f"(sha256 `{str(report.source.get('sha256'))[:16]}…`)",
        f"- Converted: {report.created_at} on {report.host.get('machine')} {report.host.get('platform')} "
        f"({report.host.get('cpu_count')} CPUs); latencies are batch-1 measurements on this host",
        f"- Evaluation data: {report.evaluation.origin}, {report.evaluation.samples} samples"
        + (", labelled" if report.evaluation.labels else ", unlabelled"),
        f"- Calibration data: {report.calibration.origin}, {report.calibration.samples} samples",
        "- Budget: "
        + (
            f"max accuracy drop {report.max_accuracy_drop:g}"
            if report.max_accuracy_drop is not None
            else "default (0.01 accuracy drop, or top-1 disagreement without labels)"
        ),
        f"- Source accuracy: {_fmt(report.source_accuracy)}",
        "",
        "| target | runtime | precision | status | size (KiB) | max abs err | top-1 agree | accuracy "
        "| p50 ms | p99 ms | executed | in budget |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for v in report.variants:
        size = None if v.size_bytes is None else v.size_bytes / 1024
        lines.append(
            f"| {v.target} | {v.runtime} | {v.precision} | {v.status} | {_fmt(size, 4)} | {_fmt(v.max_abs_error)} "
            f"| {_fmt(v.top1_agreement)} | {_fmt(v.accuracy)} | {_fmt(v.latency_ms_p50)} | {_fmt(v.latency_ms_p99)} "
            f"| {_fmt(v.executed)} | {_fmt(v.within_budget)} |"
        )
    notes = [
        f"- **{v.name}**: {v.reason or (v.error.message if v.error else '')}"
        for v in report.variants
        if v.reason or v.error
    ]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "## Pipelines", ""]
    for v in report.variants:
        steps = " → ".join(step["type"] for step in v.pipeline) or "—"
        lines.append(f"- {v.name}: {steps}")
    lines += [
        "",
        "Variants marked *not executed* were converted but could not run on the converting host;",
        "they are never reported as within budget.",
        "",
    ]
    return "\n".join(lines)


def write_report(report: ConversionReport, directory: Path) -> None:
    """Write ``report.json`` and the model card into ``directory``."""
    (directory / REPORT_FILE).write_text(report.to_json())
    (directory / MODEL_CARD_FILE).write_text(render_model_card(report))
