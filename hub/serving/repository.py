"""Where served models come from: the small :class:`ModelRepository` protocol the server loads through,
and :class:`StaticRepository`, the in-memory one behind ``edgefleet serve --model NAME=PATH``.

The hub registry implements the same protocol to serve registry models (resolve a name and version to
the artifact's path in the content-addressed store plus its runtime).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hub.serving.config import BatchingConfig, ModelSpec
from hub.serving.errors import ModelNotFoundError


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One version of one model a repository can serve."""

    name: str
    version: str


class ModelRepository(Protocol):
    """Resolves model names and versions to servable specs."""

    def index(self) -> list[ModelRef]:
        """Every model version the repository offers."""
        ...

    def resolve(self, name: str, version: str | None = None) -> ModelSpec:
        """The spec of ``name`` at ``version`` (the latest when ``None``); raises ModelNotFoundError."""
        ...


def version_key(version: str) -> tuple[int, tuple[int, ...], str]:
    """Sort key: integer and dotted (semver-like) versions in numeric order, above any other string."""
    core = version.split("-", 1)[0].split("+", 1)[0].split(".")
    if all(part.isdigit() for part in core):
        return (1, tuple(int(p) for p in core), "~" if core == version.split(".") else version)
    return (0, (), version)


class StaticRepository:
    """A fixed set of specs, e.g. from the command line or a serving config file."""

    def __init__(self, specs: Iterable[ModelSpec] = ()) -> None:
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ModelSpec) -> None:
        """Offer ``spec`` (replacing the same name and version)."""
        self._specs[(spec.name, spec.version)] = spec

    def index(self) -> list[ModelRef]:
        """Every name and version, sorted."""
        refs = [ModelRef(n, v) for n, v in self._specs]
        return sorted(refs, key=lambda r: (r.name, version_key(r.version)))

    def resolve(self, name: str, version: str | None = None) -> ModelSpec:
        """The spec of ``name`` at ``version``, or its latest version."""
        if version is not None:
            spec = self._specs.get((name, version))
            if spec is None:
                raise ModelNotFoundError(f"model {name!r} has no version {version!r} in the repository")
            return spec
        versions = [v for n, v in self._specs if n == name]
        if not versions:
            raise ModelNotFoundError(f"model {name!r} is not in the repository")
        return self._specs[(name, max(versions, key=version_key))]


def parse_model_arg(arg: str, batching: BatchingConfig | None = None) -> ModelSpec:
    """Parse ``NAME=PATH`` or ``NAME:VERSION=PATH`` (the ``--model`` option) into a spec."""
    ident, sep, path = arg.partition("=")
    if not sep or not ident or not path:
        raise ValueError(f"expected NAME=PATH or NAME:VERSION=PATH, got {arg!r}")
    name, _, version = ident.partition(":")
    return ModelSpec(name=name, version=version or "1", path=Path(path), batching=batching or BatchingConfig())
