"""The commands that used to open the hub's database now talk to its REST API over HTTP: ``tokens``, ``audit``,
``policy``, ``capture``, ``broker auth-files`` and ``models register-conversion``. Each works with a token of the
role it needs, is refused in one line without one (a JSON object with ``--json``), and its ``--json`` parses."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from fleet.wire.acl import HUB_USERNAME
from fleet.wire.messages import CaptureBatch, CapturedSample
from hub.api import create_app
from hub.app import Hub
from hub.auth import Role
from hub.cli import app
from hub.config import HubSettings
from hub.registry.credentials import verify_password
from hub.registry.tables import Device
from tests.http_server import running_server
from tests.hub.auth.clients import token_for

NO_TOKEN = {"EDGEFLEET_TOKEN": "", "EDGEFLEET_CLI_CONFIG": "/nonexistent/cli.toml"}


@dataclass
class LiveHub:
    hub: Hub
    url: str
    tokens: dict[Role, str]
    device_secret: str

    def run(self, role: Role | None, *args: str) -> Result:
        """``edgefleet --hub URL [--token T] ARGS`` with a token of ``role`` (none when None)."""
        token = ["--token", self.tokens[role]] if role is not None else []
        return CliRunner().invoke(app, ["--hub", self.url, *token, *args], env=NO_TOKEN)

    def json(self, role: Role, *args: str) -> object:
        result = self.run(role, *args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = Hub(HubSettings(data_dir=tmp_path_factory.mktemp("hub")))  # not started: storage and REST only
    hub.registry.add_version("digits", "1.0.0")
    _, secret = hub.registry.provision_device("cam-1", "x86-onnx-cpu", {"site": "north"})
    samples = [CapturedSample(ts=float(i), input=[float(i)] * 4, label=str(i % 2), confidence=0.9) for i in range(3)]
    batch = CaptureBatch(
        batch_id="capture-0001", device_id="cam-1", target="x86-onnx-cpu", model="digits", version="1.0.0",
        shape=[4], samples=samples,
    )  # fmt: skip
    hub.captures.add(batch, now=1.0, max_age_s=None)
    try:
        with running_server(create_app(hub)) as address:
            yield LiveHub(hub, f"http://{address}", {role: token_for(hub, role) for role in Role}, secret)
    finally:
        hub.db.close()


def _one_line(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == "" and "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


COMMANDS = [
    ("tokens", "create", "--name", "ci", "--role", "viewer"),
    ("tokens", "list"),
    ("tokens", "revoke", "abc"),
    ("audit",),
    ("policy", "set", "digits:1.0.0", "--max-drift-share", "0.5"),
    ("policy", "show", "digits:1.0.0"),
    ("policy", "events"),
    ("capture", "export", "digits:1.0.0", "--out", "/nonexistent/never-written.npz"),
    ("capture", "delete", "digits"),
    ("broker", "auth-files", "--out", "/nonexistent/never-written"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_without_a_token_each_command_is_refused_in_one_line(live: LiveHub, args: tuple[str, ...]) -> None:
    assert _one_line(live.run(None, *args)).startswith("error: HTTP 401: ")
    refused = json.loads(_one_line(live.run(None, *args, "--json")))
    assert list(refused) == ["error"] and refused["error"].startswith("HTTP 401: ")


def test_tokens_are_made_listed_and_revoked_by_an_admin_and_audited(live: LiveHub) -> None:
    made = live.json(Role.ADMIN, "tokens", "create", "--name", "grafana", "--role", "viewer", "--days", "30")
    assert isinstance(made, dict) and made["token"].startswith("ef_") and made["role"] == "viewer"
    listed = live.json(Role.ADMIN, "tokens", "list")
    assert isinstance(listed, list) and made["token"] not in json.dumps(listed)
    assert {"grafana": "active"}.items() <= {t["name"]: t["state"] for t in listed}.items()
    works = CliRunner().invoke(app, ["--hub", live.url, "--token", made["token"], "models", "list", "--json"])
    assert works.exit_code == 0 and json.loads(works.stdout)[0]["name"] == "digits"

    revoked = live.json(Role.ADMIN, "tokens", "revoke", made["id"])
    assert isinstance(revoked, dict) and revoked["state"] == "revoked"
    refused = CliRunner().invoke(app, ["--hub", live.url, "--token", made["token"], "models", "list"], env=NO_TOKEN)
    assert _one_line(refused).startswith("error: HTTP 401: ")
    audit = live.json(Role.ADMIN, "audit", "--limit", "5")
    assert isinstance(audit, list)
    assert [(e["method"], e["path"]) for e in audit[:2]] == [("DELETE", f"/tokens/{made['id']}"), ("POST", "/tokens")]
    assert "grafana" in live.run(Role.ADMIN, "tokens", "list").stdout  # the table

    assert _one_line(live.run(Role.OPERATOR, "tokens", "list")).startswith("error: HTTP 403: ")
    bad_role = _one_line(live.run(Role.ADMIN, "tokens", "create", "--name", "x", "--role", "root"))
    assert bad_role.startswith("error: HTTP 422: ") and "admin" in bad_role


def test_a_policy_is_set_by_an_operator_and_read_by_a_viewer(live: LiveHub) -> None:
    set_ = live.json(Role.OPERATOR, "policy", "set", "digits:1.0.0", "--max-drift-share", "0.3", "--rollback")
    assert isinstance(set_, dict) and set_["policy"]["max_drift_share"] == 0.3 and set_["policy"]["rollback"]
    shown = live.json(Role.VIEWER, "policy", "show", "digits:1.0.0")
    assert isinstance(shown, dict) and shown["policy"] == set_["policy"]
    assert live.json(Role.VIEWER, "policy", "events", "--model", "digits") == []
    assert "max_drift_share: 0.3" in live.run(Role.VIEWER, "policy", "show", "digits:1.0.0").stdout

    invalid = _one_line(live.run(Role.OPERATOR, "policy", "set", "digits:1.0.0", "--max-drift-share", "2"))
    assert invalid.startswith("error: HTTP 422: invalid policy: max_drift_share")
    assert _one_line(live.run(Role.VIEWER, "policy", "set", "digits:1.0.0")).startswith("error: HTTP 403: ")
    assert _one_line(live.run(Role.VIEWER, "policy", "show", "digits")) == "error: expected MODEL:VERSION, got 'digits'"


def test_captures_are_exported_and_deleted_by_an_operator(live: LiveHub, tmp_path: Path) -> None:
    out = tmp_path / "samples.npz"
    assert live.json(Role.OPERATOR, "capture", "export", "digits:1.0.0", "--out", str(out)) == {
        "out": str(out),
        "rows": 3,
    }
    with np.load(out, allow_pickle=False) as samples:
        assert samples["inputs"].shape == (3, 4) and list(samples["labels"]) == ["0", "1", "0"]
        assert list(samples["device_ids"]) == ["cam-1"] * 3
    elsewhere = tmp_path / "south.npz"
    live.json(Role.OPERATOR, "capture", "export", "digits:1.0.0", "--out", str(elsewhere), "--cohort", "site=south")
    with np.load(elsewhere, allow_pickle=False) as samples:
        assert len(samples["inputs"]) == 0
    denied = live.run(Role.VIEWER, "capture", "export", "digits:1.0.0", "--out", str(tmp_path / "v.npz"))
    assert _one_line(denied).startswith("error: HTTP 403: ") and not (tmp_path / "v.npz").exists()
    unknown = live.run(Role.OPERATOR, "capture", "export", "digits:9.0.0", "--out", str(tmp_path / "u.npz"))
    assert _one_line(unknown).startswith("error: HTTP 404: ")

    assert live.json(Role.OPERATOR, "capture", "delete", "digits:1.0.0")["deleted_messages"] == 1  # type: ignore[index]
    assert live.hub.captures.rows("digits", "1.0.0") == []


def test_broker_files_come_from_the_hub_for_an_admin(live: LiveHub, tmp_path: Path) -> None:
    out = tmp_path / "auth"
    tls = ["--port", "8883", "--tls-cert", "b.crt", "--tls-key", "b.key", "--client-ca", "ca.crt"]
    written = live.json(Role.ADMIN, "broker", "auth-files", "--out", str(out), *tls, "--require-client-cert")
    assert isinstance(written, dict) and written["devices"] == 1
    hashes = dict(line.split(":", 1) for line in (out / "passwd").read_text().split())
    assert set(hashes) == {"cam-1", HUB_USERNAME} and verify_password(live.device_secret, hashes["cam-1"])
    assert "user cam-1" in (out / "acl").read_text()
    config = written["listener_config"].splitlines()
    for line in ("listener 8883 127.0.0.1", "require_certificate true", f"password_file {out / 'passwd'}"):
        assert line in config, (line, config)
    table = live.run(Role.ADMIN, "broker", "auth-files", "--out", str(out))
    assert table.exit_code == 0 and "allow_anonymous false" in table.stdout

    denied = live.run(Role.OPERATOR, "broker", "auth-files", "--out", str(tmp_path / "op"))
    assert _one_line(denied).startswith("error: HTTP 403: ") and not (tmp_path / "op").exists()
    half_tls = live.run(Role.ADMIN, "broker", "auth-files", "--out", str(tmp_path / "x"), "--tls-cert", "b.crt")
    assert "--tls-cert and --tls-key go together" in _one_line(half_tls, code=2)


def test_nats_auth_file_comes_from_the_hub_for_an_admin(live: LiveHub, tmp_path: Path) -> None:
    out = tmp_path / "nats"
    tls = ["--tls-cert", "b.crt", "--tls-key", "b.key", "--client-ca", "ca.crt"]
    written = live.json(Role.ADMIN, "broker", "auth-files", "--broker", "nats", "--out", str(out), *tls)
    assert isinstance(written, dict) and written["devices"] == 1 and written["left_out"] == []
    assert written["auth_file"] == str(out / "nats-auth.conf")
    text = (out / "nats-auth.conf").read_text()
    assert '"user": "CN=cam-1"' in text and f'"user": "{HUB_USERNAME}"' in text and live.hub.hub_secret not in text
    assert (out / "nats-auth.conf").stat().st_mode & 0o777 == 0o600
    assert 'include "nats-auth.conf"' in written["config"] and "verify_and_map: true" in written["config"]

    with live.hub.db.session() as session:  # provisioned before migration 0011: no bcrypt hash
        session.add(Device(id="cam-old", target="x86-onnx-cpu", credential_hash="-", broker_hash=None))
    try:
        table = live.run(Role.ADMIN, "broker", "auth-files", "--broker", "nats", "--out", str(out), *tls)
    finally:
        live.hub.registry.remove_device("cam-old")
    assert table.exit_code == 0 and "verify_and_map: true" in table.stdout
    warning = " ".join(table.stderr.split())
    assert "1 devices provisioned before NATS password hashes were stored are left out" in warning
    assert "(cam-old)" in warning and "CN=cam-old" not in (out / "nats-auth.conf").read_text()
    assert "`edgefleet devices rekey ID --out DIR`" in warning

    no_ca = live.run(Role.ADMIN, "broker", "auth-files", "--broker", "nats", "--out", str(out), *tls[:4])
    assert "--broker nats needs --tls-cert, --tls-key and --client-ca" in _one_line(no_ca, code=2)
    denied = live.run(Role.OPERATOR, "broker", "auth-files", "--broker", "nats", "--out", str(tmp_path / "op"), *tls)
    assert _one_line(denied).startswith("error: HTTP 403: ") and not (tmp_path / "op").exists()
    unknown = live.run(Role.ADMIN, "broker", "auth-files", "--broker", "emqx", "--out", str(tmp_path / "e"))
    assert "--broker must be mosquitto or nats" in _one_line(unknown, code=2)


def _tiny_conversion(root: Path) -> tuple[Path, Path]:
    """A real one-variant conversion of a 4-in, 3-out ONNX MatMul, and a vectors file for it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from converters.report import ConversionReport, DataInfo, VariantReport

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [weights],
    )
    out = root / "conversion"
    (out / "x86-onnx-cpu-fp32").mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, out / "x86-onnx-cpu-fp32" / "m.onnx")
    data = DataInfo(origin="vectors.npz", samples=32, labels=False)
    variant = VariantReport(
        target="x86-onnx-cpu", runtime="onnxruntime", precision="fp32", format="onnx", path="x86-onnx-cpu-fp32/m.onnx",
        executed=True, status="ok", accuracy=0.9, latency_ms_p50=0.1,
    )  # fmt: skip
    skipped = VariantReport(target="rpi4-arm64", runtime="litert", precision="int8", status="failed", reason="no")
    report = ConversionReport(
        model="tiny", source={"inputs": {"input": [-1, 4]}}, created_at="2026-12-01T00:00:00Z", host={},
        toolchains={}, max_accuracy_drop=0.02, evaluation=data, calibration=data, variants=[variant, skipped],
    )  # fmt: skip
    (out / "report.json").write_text(report.to_json())
    vectors = root / "vectors.npz"
    np.savez(vectors, input=rng.normal(size=(32, 4)).astype(np.float32))
    return out, vectors


def test_a_conversion_is_prepared_here_and_registered_on_the_hub(live: LiveHub, tmp_path: Path) -> None:
    from agent.bundle import read_bundle

    conversion, vectors = _tiny_conversion(tmp_path)
    args = ("models", "register-conversion", str(conversion), "--version", "2.0.0", "--vectors", str(vectors))
    assert _one_line(live.run(None, *args)).startswith("error: HTTP 401: ")  # refused only at the hub
    assert _one_line(live.run(Role.VIEWER, *args)).startswith("error: HTTP 403: ")

    result = live.json(Role.OPERATOR, *args, "--labels", "a,b,c")
    assert isinstance(result, dict) and (result["model"], result["version"]) == ("tiny", "2.0.0")
    assert [r["variant"] for r in result["registered"]] == ["x86-onnx-cpu/fp32"]
    assert result["skipped"] == [{"variant": "rpi4-arm64/int8", "reason": "no"}]
    (variant,) = live.hub.registry.list_variants("tiny", "2.0.0")
    assert variant.bundle_sha256 == result["registered"][0]["bundle_sha256"] and variant.metrics["accuracy"] == 0.9
    bundle = read_bundle(live.hub.store.path(variant.bundle_sha256))  # signed bundle, rebuilt by the hub
    assert bundle.manifest.postprocess.labels == ["a", "b", "c"] and bundle.reference is not None
    assert bundle.selftest_inputs.shape == (16, 4)
    assert live.hub.tuf.trusted_root()  # and its TUF target is signed
    again = _one_line(live.run(Role.OPERATOR, *args))
    assert again.startswith("error: HTTP 409: ")
    not_semver = live.run(Role.OPERATOR, *args[:4], "two", *args[5:])
    assert _one_line(not_semver) == "error: version 'two' is not semantic versioning (MAJOR.MINOR.PATCH)"


def test_json_errors_of_local_commands_are_objects_too(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(tmp_path), "--json"])
    assert list(json.loads(_one_line(missing))) == ["error"]
    usage = CliRunner().invoke(app, ["tokens", "create", "--name", "x", "--json"])
    assert json.loads(_one_line(usage, code=2)) == {"error": "Missing option '--role'."}
    assert _one_line(CliRunner().invoke(app, ["tokens", "create", "--name", "x"]), code=2) == (
        "error: Missing option '--role'."
    )


def test_the_npz_the_hub_answers_loads_without_pickle(live: LiveHub) -> None:
    import httpx

    answer = httpx.get(
        f"{live.url}/models/digits/versions/1.0.0/captures",
        headers={"Authorization": f"Bearer {live.tokens[Role.OPERATOR]}"},
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as arrays:
        assert set(arrays.files) == {"inputs", "labels", "confidences", "device_ids", "targets", "timestamps"}
