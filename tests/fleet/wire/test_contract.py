"""Data contracts: inference from calibration data, vectorised per-rule row counts, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleet.errors import ProtocolError
from fleet.wire.contract import DataContract, InputContract, check, check_input, infer, load_contract


def test_inferred_contract_accepts_its_calibration_data_and_counts_rows_per_rule() -> None:
    rng = np.random.default_rng(0)
    calib = {"x": rng.uniform(0, 16, (200, 8, 8)).astype(np.float32), "code": rng.integers(0, 3, (200, 2))}
    contract = infer(calib, model="digits")
    assert contract.input("x").min >= 0 and contract.input("x").max <= 16
    assert contract.input("code").categories == [0.0, 1.0, 2.0] and contract.input("code").dtype == "int64"
    assert check(contract, calib).model_dump() == {"rows": 200, "violations": {}}

    live_x = calib["x"][:10].copy()
    live_x[0, 0, 0] = 99.0  # out of range
    live_x[1, 3, 3] = np.nan  # NaN where none was seen
    live_x[2, 0, 0] = -1.0  # out of range as well
    live_code = calib["code"][:10].copy()
    live_code[4, 1] = 7  # an unseen category
    result = check(contract, {"x": live_x, "code": live_code})
    assert result.rows == 10
    assert result.violations == {"x.range": 2, "x.nan": 1, "code.range": 1, "code.category": 1}


def test_shape_dtype_and_per_feature_rules() -> None:
    spec = InputContract(name="t", dtype="uint8", shape=[3], feature_min=[0, 0, 10], feature_max=[5, 5, 20])
    batch = np.array([[1, 2, 15], [1, 2, 3], [1.5, 2, 15], [300, 0, 10]])
    assert check_input(spec, batch).violations == {"t.range": 2, "t.dtype": 2}
    assert check_input(spec, np.zeros((4, 2))).violations == {"t.shape": 4}
    assert check_input(spec, np.array([["a", "b", "c"]])).violations == {"t.dtype": 1}
    missing = check(DataContract(inputs=[spec]), {"other": np.zeros((5, 3))})
    assert missing.violations == {"t.shape": 5}


def test_per_feature_inference_and_nan_allowed_when_seen() -> None:
    data = np.array([[0.0, 1.0], [1.0, np.nan], [2.0, 3.0]])
    contract = infer({"x": data}, per_feature=True)
    spec = contract.input()
    assert spec.allow_nan and spec.feature_min == [0.0, 1.0] and spec.feature_max == [2.0, 3.0]
    assert check_input(spec, np.array([[2.0, 0.5], [np.nan, 2.0]])).violations == {"x.range": 1}


def test_contract_files_round_trip_json_and_toml_and_bad_ones_say_why(tmp_path: Path) -> None:
    import tomli_w

    contract = infer({"x": np.ones((4, 2), dtype=np.float32)})
    (tmp_path / "c.json").write_text(contract.model_dump_json())
    (tmp_path / "c.toml").write_text(tomli_w.dumps(contract.model_dump(mode="json", exclude_none=True)))
    assert load_contract(tmp_path / "c.json") == contract == load_contract(tmp_path / "c.toml")
    (tmp_path / "bad.json").write_text('{"inputs": [{"name": "x", "shape": [2], "dtype": "complex"}]}')
    with pytest.raises(ProtocolError, match=r"inputs.0.dtype"):
        load_contract(tmp_path / "bad.json")
    with pytest.raises(ProtocolError, match="no rows"):
        infer({"x": np.zeros((0, 3))})
