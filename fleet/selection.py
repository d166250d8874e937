"""Which variant a device gets, and which devices a label selector picks. Pure functions, no I/O.

Variant selection: a device gets the variant built for *its* target whose precision the target runs, that
fits the device's memory and latency budget and is not too heavy to serve on the device. Among the fitting
variants the target's precision order decides first, then measured latency, then size. A device with no
fitting variant gets a `Selection` without a variant and a reason per rejected variant; it is never handed
a variant built for another target.

Label selectors follow Kubernetes' equality- and set-based syntax, requirements joined by commas (AND)::

    env=prod,region!=eu,tier in (edge, gateway),camera,!retired,hw notin (v1)

Invalid policies and selectors raise `fleet.errors.FleetConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet.errors import FleetConfigError
from targets import Target, UnknownTargetError, get_target

_MIB = 1024 * 1024


class Variant(BaseModel):
    """One built variant of a model version, as the registry knows it (measurements optional).

    ``latency_ms`` is the measured p95 latency on the target; ``peak_memory_mb`` the measured peak resident
    memory while serving. When they are missing, selection estimates memory from ``size_bytes``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    variant_id: Annotated[str, Field(min_length=1, max_length=128)]
    target: Annotated[str, Field(min_length=1, max_length=128)]
    precision: str
    size_bytes: Annotated[int, Field(gt=0)]
    param_count: Annotated[int, Field(ge=0)] | None = None
    latency_ms: Annotated[float, Field(gt=0)] | None = None
    peak_memory_mb: Annotated[float, Field(gt=0)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class SelectionPolicy(BaseModel):
    """How strictly variants must fit their device.

    A variant fits memory when its footprint (measured ``peak_memory_mb``, else ``size_bytes`` times
    ``memory_overhead``) is at most ``memory_fraction`` of the target's ``memory_mb``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8
    memory_overhead: Annotated[float, Field(ge=1)] = 1.5
    require_measured_latency: bool = False


class RejectCode(StrEnum):
    """Why a variant, or every variant, was not chosen for a device."""

    UNKNOWN_TARGET = "unknown_target"
    NO_VARIANT_FOR_TARGET = "no_variant_for_target"
    PRECISION_UNSUPPORTED = "precision_unsupported"
    MEMORY = "memory"
    LATENCY = "latency"
    LATENCY_UNMEASURED = "latency_unmeasured"
    HEAVY = "heavy"


class Rejection(BaseModel):
    """One variant that was not chosen, and why."""

    model_config = ConfigDict(frozen=True)

    variant_id: str
    code: RejectCode
    detail: str


class Selection(BaseModel):
    """The outcome for one target: the chosen variant, or none with a reason a person can act on."""

    model_config = ConfigDict(frozen=True)

    target: str
    variant: Variant | None
    reason: str
    code: RejectCode | None = None
    rejected: tuple[Rejection, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether a variant was chosen."""
        return self.variant is not None


def _footprint_mb(variant: Variant, policy: SelectionPolicy) -> tuple[float, bool]:
    if variant.peak_memory_mb is not None:
        return variant.peak_memory_mb, True
    return variant.size_bytes * policy.memory_overhead / _MIB, False


def _check(variant: Variant, target: Target, policy: SelectionPolicy) -> Rejection | None:
    """Return why ``variant`` (already built for ``target``) does not fit, or None when it fits."""
    vid = variant.variant_id
    if not target.supports(variant.precision):
        return Rejection(
            variant_id=vid,
            code=RejectCode.PRECISION_UNSUPPORTED,
            detail=f"precision {variant.precision} is not one of {', '.join(target.precisions)}",
        )
    if variant.param_count is not None and variant.param_count > target.heavy_param_limit:
        return Rejection(
            variant_id=vid,
            code=RejectCode.HEAVY,
            detail=f"{variant.param_count:,} parameters exceed the device limit of "
            f"{target.heavy_param_limit:,}; serve it from the cloud tier",
        )
    footprint, measured = _footprint_mb(variant, policy)
    budget = target.memory_mb * policy.memory_fraction
    if footprint > budget:
        how = "measured peak" if measured else f"estimated ({policy.memory_overhead:g}x size)"
        return Rejection(
            variant_id=vid,
            code=RejectCode.MEMORY,
            detail=f"{how} memory {footprint:.2f} MiB exceeds the budget of {budget:.2f} MiB "
            f"({policy.memory_fraction:.0%} of {target.memory_mb} MiB)",
        )
    if variant.latency_ms is None:
        if policy.require_measured_latency:
            return Rejection(variant_id=vid, code=RejectCode.LATENCY_UNMEASURED, detail="latency was never measured")
    elif variant.latency_ms > target.latency_budget_ms:
        return Rejection(
            variant_id=vid,
            code=RejectCode.LATENCY,
            detail=f"p95 latency {variant.latency_ms:g} ms > budget {target.latency_budget_ms:g} ms",
        )
    return None


def _preference(variant: Variant, target: Target) -> tuple[int, int, float, int, str]:
    latency_known = 0 if variant.latency_ms is not None else 1
    return (
        target.precisions.index(variant.precision),
        latency_known,
        variant.latency_ms or 0.0,
        variant.size_bytes,
        variant.variant_id,
    )


def select_variant(
    target: Target | str, variants: Iterable[Variant], policy: SelectionPolicy | None = None
) -> Selection:
    """Choose the variant for a device of ``target`` among ``variants`` (all variants of one model version).

    Never raises for an unfit device: the returned `Selection` has ``variant=None``, a ``code`` and a
    ``reason``. An unknown target name gives ``code=UNKNOWN_TARGET``.
    """
    policy = policy or SelectionPolicy()
    pool = list(variants)
    if isinstance(target, str):
        try:
            target = get_target(target)
        except UnknownTargetError as exc:
            return Selection(target=str(target), variant=None, code=RejectCode.UNKNOWN_TARGET, reason=str(exc))
    own = [v for v in pool if v.target == target.name]
    if not own:
        built = sorted({v.target for v in pool})
        return Selection(
            target=target.name,
            variant=None,
            code=RejectCode.NO_VARIANT_FOR_TARGET,
            reason=f"no variant built for target {target.name}"
            + (f" (built for: {', '.join(built)})" if built else " (the version has no variants)"),
        )
    rejected: list[Rejection] = []
    fitting: list[Variant] = []
    for variant in own:
        rejection = _check(variant, target, policy)
        if rejection is None:
            fitting.append(variant)
        else:
            rejected.append(rejection)
    rejected.sort(key=lambda r: r.variant_id)
    if not fitting:
        codes = {r.code for r in rejected}
        code = codes.pop() if len(codes) == 1 else rejected[0].code
        details = "; ".join(f"{r.variant_id}: {r.detail}" for r in rejected)
        return Selection(
            target=target.name,
            variant=None,
            code=code,
            reason=f"no variant for {target.name} fits the device: {details}",
            rejected=tuple(rejected),
        )
    chosen = min(fitting, key=lambda v: _preference(v, target))
    return Selection(
        target=target.name,
        variant=chosen,
        reason=f"{chosen.variant_id} ({chosen.precision}) is the preferred fitting variant for {target.name}",
        rejected=tuple(rejected),
    )


# --------------------------------------------------------------------------------------------- selectors

Operator = Literal["=", "!=", "in", "notin", "exists", "!exists"]
_KEY = r"[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VALUE = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(rf"^(?:{_VALUE})$")
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_EQ_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*(.*)$")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One clause of a selector, e.g. ``tier in (edge,gateway)``."""

    key: str
    op: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this clause (as in Kubernetes, ``!=`` and ``notin`` match absence)."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=" and "notin"

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return f"{self.key}{self.op}{self.values[0]}"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A conjunction of `Requirement`; the empty selector matches every device."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every requirement holds for ``labels``."""
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
            if depth > 1:
                raise FleetConfigError(f"nested parentheses in selector {text!r}")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FleetConfigError(f"unbalanced ')' in selector {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise FleetConfigError(f"unbalanced '(' in selector {text!r}")
    parts.append("".join(current))
    return parts


def _value(raw: str, clause: str) -> str:
    value = raw.strip()
    if not _VALUE_RE.match(value):
        raise FleetConfigError(f"invalid label value {value!r} in selector clause {clause!r}")
    return value


def _requirement(clause: str) -> Requirement:
    if not clause:
        raise FleetConfigError("empty clause in selector (stray comma?)")
    if match := _SET_RE.match(clause):
        key, op, body = match.groups()
        values = tuple(_value(v, clause) for v in body.split(","))
        if values == ("",):
            raise FleetConfigError(f"empty value set in selector clause {clause!r}")
        return Requirement(key=key, op="in" if op == "in" else "notin", values=tuple(sorted(set(values))))
    if match := _EQ_RE.match(clause):
        key, op, raw = match.groups()
        return Requirement(key=key, op="!=" if op == "!=" else "=", values=(_value(raw, clause),))
    if clause.startswith("!") and _KEY_RE.match(clause[1:].strip()):
        return Requirement(key=clause[1:].strip(), op="!exists")
    if _KEY_RE.match(clause):
        return Requirement(key=clause, op="exists")
    raise FleetConfigError(
        f"cannot parse selector clause {clause!r}: use key=value, key!=value, key in (a,b), "
        "key notin (a,b), key or !key"
    )


def parse_selector(text: str | None) -> LabelSelector:
    """Parse a Kubernetes-style label selector; ``""`` or None selects everything.

    Raises `FleetConfigError` naming the clause that does not parse.
    """
    if text is None or not text.strip():
        return LabelSelector()
    return LabelSelector(tuple(_requirement(part.strip()) for part in _split_top_level(text.strip())))


def selector_labels(labels: Mapping[str, str], target: str | None) -> dict[str, str]:
    """The labels a selector sees for a device: its own labels plus ``target`` unless it sets one itself."""
    out = dict(labels)
    if target is not None:
        out.setdefault("target", target)
    return out
