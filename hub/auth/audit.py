"""`AuditMiddleware`: every change asked of the REST API (any method but GET, HEAD and OPTIONS) by an
authenticated token is written to the audit log with its outcome, whatever it was (done, refused by role, failed).

Anonymous and bad-token requests are not written (they change nothing and would let anyone fill the table): the
failed-login counter and the log record them. Inference calls (``.../infer``) change nothing and are not written.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.auth.tokens import Principal
from hub.registry.access import AccessStore
from hub.registry.access_tables import AuditEntry

log = logging.getLogger(__name__)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _is_change(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] not in READ_METHODS and not scope["path"].endswith("/infer")


class AuditMiddleware:
    """Writes one `AuditEntry` per change after its answer is sent."""

    def __init__(self, app: ASGIApp, store: AccessStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_change(scope):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        status = 500  # unless an answer starts

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            principal = scope["state"].get("principal")
            if isinstance(principal, Principal):
                await run_in_threadpool(self._record, scope, principal, status)

    def _record(self, scope: Scope, principal: Principal, status: int) -> None:
        route = str(getattr(scope.get("route"), "path", scope["path"]))
        client = scope.get("client")
        entry = AuditEntry(
            token_id=principal.token_id,
            token_name=principal.name,
            role=principal.role.value,
            method=scope["method"],
            route=route,
            path=scope["path"][:1024],
            client=client[0] if client else "unknown",
            status=status,
        )
        try:
            self.store.record_audit(entry)
        except Exception:  # the change is done; losing its record must not turn the answer into an error
            log.exception("could not write the audit entry %s", entry)
