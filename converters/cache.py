"""Step cache: each step's output stored under a key of (input hash, step config, toolchain versions)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from converters.registry import STEPS
from converters.types import Artifact

CACHE_FORMAT = 1
_DISTRIBUTIONS = {
    "torch": "torch",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "nncf": "nncf",
    "coremltools": "coremltools",
    "litert_torch": "litert-torch",
    "ai_edge_litert": "ai-edge-litert",
}


@cache
def distribution_version(module: str) -> str:
    """Installed version of the distribution providing ``module`` ("missing" if none)."""
    try:
        return metadata.version(_DISTRIBUTIONS.get(module, module))
    except metadata.PackageNotFoundError:
        return "missing"


def toolchain_versions(step_type: str) -> dict[str, str]:
    """Versions of the modules ``step_type`` depends on (part of its cache key)."""
    modules = STEPS[step_type].requires if step_type in STEPS else ()
    return {module: distribution_version(module) for module in modules}


def digest(*parts: Any) -> str:
    """A stable sha256 over JSON-serialisable parts."""
    text = json.dumps([CACHE_FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StepCache:
    """Content-addressed step outputs under ``root``. Without a root they are kept in memory for one
    run (the artifacts stay where their step wrote them, in the run's scratch directory), so the
    trials of a search share one export instead of redoing it."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        self._artifacts: dict[str, Artifact] = {}
        self._records: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> Artifact | None:
        """The artifact stored under ``key``, or None."""
        if self.root is None:
            return self._artifacts.get(key)
        entry = self.root / key
        try:
            meta = json.loads((entry / "artifact.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        artifact = Artifact(entry, meta["main"], meta["format"], meta["precision"], tuple(meta["files"]), meta["meta"])
        if not all((entry / name).exists() for name in artifact.files):
            return None
        return artifact

    def put(self, key: str, artifact: Artifact) -> Artifact:
        """Store ``artifact``'s files under ``key`` atomically and return the stored copy."""
        if self.root is None:
            self._artifacts[key] = artifact
            return artifact
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root))
        try:
            for name in artifact.files:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(artifact.root / name, staging / name)
            record = {
                "main": artifact.main,
                "format": artifact.format,
                "precision": artifact.precision,
                "files": list(artifact.files),
                "meta": dict(artifact.meta),
            }
            (staging / "artifact.json").write_text(json.dumps(record, default=str))
            with contextlib.suppress(OSError):  # another process stored it first: keep theirs
                staging.rename(self.root / key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(key) or artifact

    def get_json(self, key: str) -> dict[str, Any] | None:
        """A cached JSON record (evaluation and measurement results)."""
        if self.root is None:
            return dict(self._records[key]) if key in self._records else None
        try:
            return dict(json.loads((self.root / f"{key}.json").read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON record under ``key``."""
        if self.root is None:
            self._records[key] = dict(value)
            return
        with tempfile.NamedTemporaryFile("w", dir=self.root, suffix=".tmp", delete=False) as handle:
            json.dump(value, handle, default=str)
        Path(handle.name).replace(self.root / f"{key}.json")
