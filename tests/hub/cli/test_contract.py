"""``edgefleet contract infer|check`` and the contract step of ``convert``: files, exit codes, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from converters.report import load_report
from hub.cli import app
from hub.cli.convert import _record_contract
from tests.converters.test_gate import report, variant


def _data(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    calib, live = tmp_path / "calib.npz", tmp_path / "live.npz"
    x = rng.uniform(0, 16, (50, 64)).astype(np.float32)
    np.savez(calib, input=x)
    np.savez(live, input=np.concatenate([x[:5], x[:3] * 3]), labels=np.zeros(8))
    return calib, live


def test_infer_then_check_exits_one_when_rows_break_the_contract(tmp_path: Path) -> None:
    calib, live = _data(tmp_path)
    runner = CliRunner()
    for name in ("c.json", "c.toml"):
        inferred = runner.invoke(app, ["contract", "infer", str(calib), "--out", str(tmp_path / name)])
        assert inferred.exit_code == 0, inferred.output
        assert runner.invoke(app, ["contract", "check", str(tmp_path / name), str(calib)]).exit_code == 0
        broken = runner.invoke(app, ["contract", "check", str(tmp_path / name), str(live)])
        assert broken.exit_code == 1 and json.loads(broken.output)[str(live)] == {
            "rows": 8,
            "violations": {"input.range": 3},
        }
    missing = runner.invoke(app, ["contract", "infer", str(tmp_path / "none.npz"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "cannot read" in missing.output and not (tmp_path / "x").exists()


def test_the_conversion_step_records_the_check_and_keeps_the_contract(tmp_path: Path) -> None:
    calib, live = _data(tmp_path)
    assert CliRunner().invoke(app, ["contract", "infer", str(calib), "--out", str(tmp_path / "c.json")]).exit_code == 0
    out = tmp_path / "out"
    out.mkdir()
    conversion = report(variant("x86-onnx-cpu", accuracy=0.9))
    (out / "report.json").write_text(conversion.to_json())
    _record_contract(conversion, out, tmp_path / "c.json", [calib, live])
    stored = load_report(out, verify=False).contract
    assert stored is not None and stored["passed"] is False
    assert stored["data"][str(calib)]["violations"] == {} and stored["data"][str(live)]["violations"] == {
        "input.range": 3
    }
    assert json.loads((out / "contract.json").read_text())["inputs"][0]["max"] <= 16
