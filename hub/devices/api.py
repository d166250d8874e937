"""REST routes for the device lifecycle beyond the inventory: provisioning with a ready kit, labels, removal.

``POST /devices/kit`` provisions a device and answers its directory (`hub.devices.provisioning.kit_archive`) as a
gzipped tar: ``agent.toml``, the owner-only secret, the TUF trust root, the broker's CA and, when the hub has a fleet
CA (``device_ca_dir``), the device's certificate. ``POST /devices/{id}/secret`` gives a device a new secret (a leaked
one, or one provisioned before NATS hashes were stored) and answers its new kit the same way (``?format=json``: the
secret as ``POST /devices`` answers it); the old secret stops checking and the device's session on the embedded
broker is closed. ``DELETE /devices/{id}`` decommissions a device at once: its credential stops checking, its
session on the embedded broker is closed, its retained order and state are cleared. After each, with
``broker_auth_dir`` Mosquitto's password and ACL files are rewritten (and with ``nats_auth_dir`` NATS's).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from fleet.wire import topics
from fleet.wire.messages import DeviceId, Name
from hub.auth import Role, allow
from hub.devices.broker_acl import BrokerUser, hub_user, render_acl, render_password_file, write_broker_auth
from hub.devices.nats_auth import render_nats_authorization
from hub.devices.nats_config import write_nats_auth
from hub.devices.pki import CertificateAuthority
from hub.devices.provisioning import DeviceKit, kit_archive
from hub.registry.tables import DEVICE_SECRET_FIELDS, Device

if TYPE_CHECKING:
    from hub.app import Hub

log = logging.getLogger(__name__)

LabelKey = Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")]
LabelValue = Annotated[str, Field(max_length=256, pattern=r"^[^\x00-\x1f]*$")]


class KitIn(BaseModel):
    """A device to provision, answered with its kit."""

    device_id: DeviceId
    target: Name
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)


class LabelsIn(BaseModel):
    """Labels to set (``set``) and keys to drop (``remove``)."""

    set: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    remove: list[LabelKey] = Field(default_factory=list, max_length=64)


def broker_users(hub: Hub) -> list[BrokerUser]:
    """The broker logins of the hub and of every provisioned device that has a broker password."""
    devices = hub.registry.list_devices()
    return [hub_user(hub.hub_secret)] + [
        BrokerUser(username=d.id, password_hash=d.broker_hash, role="device") for d in devices if d.broker_hash
    ]


def refresh_broker_auth(hub: Hub) -> None:
    """Rewrite Mosquitto's password and ACL files in ``broker_auth_dir`` (reload Mosquitto with SIGHUP to apply
    them) and NATS's authorization include file in ``nats_auth_dir`` (``nats-server --signal reload``) from the
    inventory; nothing without those settings."""
    directory = hub.settings.broker_auth_dir
    if directory is not None:
        write_broker_auth(directory, broker_users(hub))
    nats_directory = hub.settings.nats_auth_dir
    if nats_directory is not None:
        auth = render_nats_authorization(
            {d.id: d.nats_hash for d in hub.registry.list_devices()}, hub.hub_secret, hub_hash=hub.nats_hub_hash
        )
        write_nats_auth(nats_directory, auth.text)
        if auth.left_out:
            log.warning(
                "%d devices provisioned before NATS hashes were stored cannot log in to NATS (give each a new "
                "secret: `edgefleet devices rekey ID --out DIR`): %s",
                len(auth.left_out),
                ", ".join(auth.left_out[:10]),
            )


def secret_answer(hub: Hub, device: Device, secret: str) -> dict[str, Any]:
    """A device's new secret as JSON, with the TUF trust root (``POST /devices``, ``?format=json``)."""
    return {
        "device_id": device.id,
        "target": device.target,
        "secret": secret,
        "trust_root": hub.tuf.trusted_root().decode(),
    }


def kit_response(hub: Hub, device: Device, secret: str, *, status_code: int) -> Response:
    """A device's kit (`kit_archive`) as a gzipped tar attachment, for the hub's broker and fleet CA."""
    settings = hub.settings
    overrides: dict[str, Any] = {"broker_url": settings.device_broker_url} if settings.device_broker_url else {}
    if settings.device_broker_failover_urls:
        overrides["broker_failover_urls"] = list(settings.device_broker_failover_urls)
    kit = DeviceKit(
        device_id=device.id,
        target=device.target,
        secret=secret,
        broker=hub.broker_address,
        trust_root=hub.tuf.trusted_root(),
        settings=overrides,
    )
    ca = CertificateAuthority(settings.device_ca_dir) if settings.device_ca_dir else None
    return Response(
        kit_archive(kit, ca=ca),
        status_code=status_code,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{device.id}.tar.gz"'},
    )


def create_broker_router(hub: Hub) -> APIRouter:
    """``GET /broker/auth-files``: Mosquitto's password and ACL files, or NATS's authorization include file
    (``?broker=nats``), for a broker on another host."""
    router = APIRouter(prefix="/broker", tags=["devices"])

    @router.get("/auth-files", dependencies=allow(Role.ADMIN))
    def auth_files(broker: Literal["mosquitto", "nats"] = "mosquitto") -> dict[str, Any]:
        """Mosquitto: the texts of its ``passwd`` (the hub's and each device's PBKDF2 hash) and ``acl`` files.
        NATS: its ``authorization`` block, a certificate user per provisioned device (with the bcrypt hash of its
        secret) and the hub's logins; ``left_out`` names the devices provisioned before such hashes were stored.
        From the inventory now; admin only, since the hashes are the broker's credentials."""
        if broker == "nats":
            auth = render_nats_authorization({d.id: d.nats_hash for d in hub.registry.list_devices()}, hub.hub_secret)
            return {"broker": "nats", "authorization": auth.text, "devices": auth.devices, "left_out": auth.left_out}
        users = broker_users(hub)
        return {
            "broker": "mosquitto",
            "passwd": render_password_file(users),
            "acl": render_acl(users),
            "devices": sum(1 for u in users if u.role == "device"),
        }

    return router


def create_devices_router(hub: Hub) -> APIRouter:
    """Routes for the device lifecycle, bound to ``hub``."""
    router = APIRouter(prefix="/devices", tags=["devices"])
    registry = hub.registry

    @router.post(
        "/kit",
        status_code=201,
        dependencies=allow(Role.PROVISIONER),
        response_class=Response,
        responses={201: {"content": {"application/gzip": {}}, "description": "the device's directory, tar.gz"}},
    )
    def provision_with_kit(body: KitIn) -> Response:
        """Provision a device and answer everything it needs as a tar.gz (its secret appears only here)."""
        device, secret = registry.provision_device(body.device_id, body.target, body.labels)
        hub.known.forget(device.id)  # it may have been heard of while unprovisioned
        answer = kit_response(hub, device, secret, status_code=201)
        refresh_broker_auth(hub)
        return answer

    @router.post(
        "/{device_id}/secret",
        dependencies=allow(Role.PROVISIONER),
        response_model=None,
        responses={
            200: {
                "content": {"application/gzip": {}, "application/json": {}},
                "description": "the device's new kit, tar.gz (with ?format=json: its new secret and trust root)",
            }
        },
    )
    def renew_secret(
        device_id: str, answer_format: Literal["kit", "json"] = Query("kit", alias="format")
    ) -> Response | dict[str, Any]:
        """Give a device a new secret (its old one stops working at once, its embedded-broker session is closed)
        and answer its new kit, or with ``?format=json`` the secret (it appears only here)."""
        device, secret = registry.renew_device_secret(device_id)
        answer = (
            secret_answer(hub, device, secret)
            if answer_format == "json"
            else kit_response(hub, device, secret, status_code=200)
        )
        if hub.embedded is not None:
            hub.embedded.disconnect(device_id)  # a session opened with the old secret
        refresh_broker_auth(hub)
        return answer

    @router.patch("/{device_id}/labels", dependencies=allow(Role.OPERATOR))
    def labels(device_id: str, body: LabelsIn) -> dict[str, Any]:
        """Set and remove labels; answer the device."""
        return registry.set_device_labels(device_id, body.set, body.remove).model_dump(
            exclude=set(DEVICE_SECRET_FIELDS)
        )

    @router.delete("/{device_id}", status_code=204, response_class=Response, dependencies=allow(Role.OPERATOR))
    def remove(device_id: str) -> Response:
        """Decommission a device: its credential stops working at once and its retained messages are cleared."""
        registry.remove_device(device_id)
        hub.known.forget(device_id)  # its messages are refused here at once (other replicas: within a minute)
        if hub.broker is not None:
            for channel in ("deployment", "state"):
                hub.broker.publish(topics.device_topic(device_id, channel), b"", qos=1, retain=True)
        if hub.embedded is not None:
            hub.embedded.disconnect(device_id)
        refresh_broker_auth(hub)
        return Response(status_code=204)

    return router
