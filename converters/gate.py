"""The quality gate a conversion must pass before it may ship, for any CI system.

Thresholds come from a TOML file (a ``[gate]`` table) and flags; every usable variant of the report is checked
(accuracy, accuracy drop against the source and against the production version's report, latency and size
budgets, per target where given) and every required target must have a usable variant. The result is JSON
first, with a text table and JUnit XML rendered from it::

    thresholds = GateThresholds.load(Path("gate.toml"), min_accuracy=0.9)
    result = evaluate_gate(load_report(Path("out")), thresholds, production=load_report(Path("prod")))
    Path("gate.xml").write_text(result.junit_xml())
    sys.exit(0 if result.passed else 1)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from converters.errors import ConversionError
from converters.report import ConversionReport, VariantReport

__all__ = ["GateCheck", "GateResult", "GateThresholds", "evaluate_gate"]


class GateThresholds(BaseModel):
    """What a conversion must meet; a threshold left unset is not checked."""

    model_config = ConfigDict(extra="forbid")
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(default=None, ge=0, le=1, description="vs the source model")
    max_drop_vs_production: float | None = Field(default=None, ge=0, le=1, description="vs the production report")
    max_latency_ms: float | None = Field(default=None, gt=0, description="p50 on the converter's host")
    latency_ms: dict[str, float] = Field(default_factory=dict, description="per-target p50 budget, overrides")
    max_size_mb: float | None = Field(default=None, gt=0)
    size_mb: dict[str, float] = Field(default_factory=dict, description="per-target size budget, overrides")
    required_targets: list[str] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> GateThresholds:
        """Thresholds from ``path``'s ``[gate]`` table (or the whole file), then ``overrides`` not None."""
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                document = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConversionError(f"cannot read gate thresholds {path}: {exc}") from exc
            raw = dict(document.get("gate", document))
        raw.update({key: value for key, value in overrides.items() if value not in (None, [], {})})
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConversionError(f"bad gate threshold {where}: {first['msg']}") from None


class GateCheck(BaseModel):
    """One check of one variant (or of the report as a whole)."""

    subject: str
    check: str
    value: float | str | None
    limit: float | str | None
    passed: bool
    message: str


class GateResult(BaseModel):
    """Every check and the verdict: passed only when every check passed."""

    model: str
    passed: bool
    checks: list[GateCheck]

    def failures(self) -> list[GateCheck]:
        """The checks that failed."""
        return [check for check in self.checks if not check.passed]

    def table(self) -> str:
        """A plain-text table, one line per check, failures marked."""
        rows = [("", "subject", "check", "value", "limit")]
        rows += [
            ("PASS" if c.passed else "FAIL", c.subject, c.check, _fmt(c.value), _fmt(c.limit)) for c in self.checks
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        verdict = "gate passed" if self.passed else f"gate FAILED: {len(self.failures())} of {len(self.checks)} checks"
        return "\n".join([*lines, verdict])

    def junit_xml(self) -> str:
        """JUnit XML: one test suite, one test case per check, a ``failure`` element for each failed one."""
        suite = ElementTree.Element(
            "testsuite",
            name=f"edgefleet-gate.{self.model}",
            tests=str(len(self.checks)),
            failures=str(len(self.failures())),
            errors="0",
        )
        for check in self.checks:
            case = ElementTree.SubElement(suite, "testcase", classname=check.subject, name=check.check)
            if not check.passed:
                failure = ElementTree.SubElement(case, "failure", message=check.message, type="threshold")
                failure.text = f"value {_fmt(check.value)}, limit {_fmt(check.limit)}"
        suites = ElementTree.Element("testsuites")
        suites.append(suite)
        return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True)


def evaluate_gate(
    report: ConversionReport, thresholds: GateThresholds, *, production: ConversionReport | None = None
) -> GateResult:
    """Check every usable variant of ``report`` and the required targets against ``thresholds``."""
    checks: list[GateCheck] = []
    usable = [v for v in report.variants if v.status == "ok"]
    for target in thresholds.required_targets:
        present = any(v.target == target for v in usable)
        checks.append(
            GateCheck(
                subject=target,
                check="target present",
                value="yes" if present else "no",
                limit="required",
                passed=present,
                message=f"{target}: {'a usable variant' if present else 'no usable variant'} in the report",
            )
        )
    for variant in usable:
        checks.extend(_variant_checks(report, variant, thresholds, production))
    if not usable:
        checks.append(
            GateCheck(
                subject=report.model,
                check="usable variants",
                value=0,
                limit=">= 1",
                passed=False,
                message="the conversion built no usable variant",
            )
        )
    return GateResult(model=report.model, passed=all(c.passed for c in checks), checks=checks)


def _variant_checks(
    report: ConversionReport, variant: VariantReport, t: GateThresholds, production: ConversionReport | None
) -> list[GateCheck]:
    name = variant.name
    out: list[GateCheck] = []

    def at_least(check: str, value: float | None, limit: float | None) -> None:
        if limit is not None:
            ok = value is not None and value >= limit
            out.append(
                GateCheck(
                    subject=name,
                    check=check,
                    value=value,
                    limit=limit,
                    passed=ok,
                    message=f"{name}: {check} {_fmt(value)} (minimum {_fmt(limit)})",
                )
            )

    def at_most(check: str, value: float | None, limit: float | None) -> None:
        if limit is not None:
            ok = value is not None and value <= limit
            out.append(
                GateCheck(
                    subject=name,
                    check=check,
                    value=value,
                    limit=limit,
                    passed=ok,
                    message=f"{name}: {check} {_fmt(value)} (maximum {_fmt(limit)})",
                )
            )

    at_least("accuracy", variant.accuracy, t.min_accuracy)
    drop = variant.accuracy_drop
    if drop is None and variant.accuracy is not None and report.source_accuracy is not None:
        drop = report.source_accuracy - variant.accuracy
    at_most("accuracy drop vs source", drop, t.max_accuracy_drop)
    if t.max_drop_vs_production is not None and production is not None:
        current = _production_accuracy(production, variant)
        vs_production = None if current is None or variant.accuracy is None else current - variant.accuracy
        at_most("accuracy drop vs production", vs_production, t.max_drop_vs_production)
    at_most("latency p50 ms", variant.latency_ms_p50, t.latency_ms.get(variant.target, t.max_latency_ms))
    size_mb = None if variant.size_bytes is None else variant.size_bytes / 1e6
    at_most("size MB", size_mb, t.size_mb.get(variant.target, t.max_size_mb))
    return out


def _production_accuracy(production: ConversionReport, variant: VariantReport) -> float | None:
    """Production's accuracy for the same target and precision, else the same target's best, else the source."""
    same = [v for v in production.variants if v.status == "ok" and v.target == variant.target]
    exact = [v.accuracy for v in same if v.precision == variant.precision and v.accuracy is not None]
    if exact:
        return exact[0]
    others = [v.accuracy for v in same if v.accuracy is not None]
    return max(others) if others else production.source_accuracy


def _fmt(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
