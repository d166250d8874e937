"""``edgefleet gate`` in CI terms: exit status, the table, JUnit XML; register-conversion honours a gate."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from typer.testing import CliRunner

from hub.cli import app
from tests.converters.test_gate import report, variant


def _conversion(tmp_path: Path, accuracy: float) -> Path:
    out = tmp_path / f"conv-{accuracy}"
    out.mkdir()
    (out / "report.json").write_text(report(variant("x86-onnx-cpu", accuracy=accuracy)).to_json())
    return out


def test_a_passing_gate_exits_zero_and_writes_junit(tmp_path: Path) -> None:
    junit = tmp_path / "gate.xml"
    result = CliRunner().invoke(
        app, ["gate", str(_conversion(tmp_path, 0.95)), "--min-accuracy", "0.9", "--junit", str(junit)]
    )
    assert result.exit_code == 0, result.output
    assert "gate passed" in result.output
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("tests") == "1"


def test_a_failing_gate_exits_one_with_the_failed_check(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("[gate]\nmin_accuracy = 0.9\nrequired_targets = ['intel-openvino']\n")
    junit = tmp_path / "gate.xml"
    result = CliRunner().invoke(
        app, ["gate", str(_conversion(tmp_path, 0.7) / "report.json"), "--config", str(config), "--junit", str(junit)]
    )
    assert result.exit_code == 1
    assert "FAIL  x86-onnx-cpu/fp32  accuracy" in result.output and "gate FAILED: 2 of 2" in result.output
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    assert sorted(c.get("name") or "" for c in cases if c.find("failure") is not None) == ["accuracy", "target present"]


def test_bad_input_exits_two_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["gate", str(tmp_path)])
    assert result.exit_code == 2 and "holds no report.json" in result.output and "Traceback" not in result.output


def test_register_conversion_refuses_a_conversion_that_fails_its_gate(tmp_path: Path) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("[gate]\nmin_accuracy = 0.9\n")
    vectors = tmp_path / "v.npz"
    vectors.write_bytes(b"unused: the gate refuses first")
    result = CliRunner().invoke(
        app,
        [
            "--hub",
            "http://127.0.0.1:9",  # never asked: the gate refuses first
            "models",
            "register-conversion",
            str(_conversion(tmp_path, 0.5)),
            "--version",
            "1.0.0",
            "--vectors",
            str(vectors),
            "--gate",
            str(config),
        ],
    )
    assert result.exit_code == 1 and "failed the gate" in result.output and "nothing registered" in result.output
