"""Request-body size limit as pure ASGI middleware (413 before the body is parsed)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Reject bodies larger than ``max_bytes``: at once from ``Content-Length``, or while streaming a
    chunked body (the read raises an HTTP 413 that the app's exception handling turns into a response).

    File uploads (``upload_prefixes``) get ``upload_max_bytes`` plus room for the multipart framing, so
    the upload route itself can answer with its own, more precise 413 on the file.
    """

    MULTIPART_SLACK = 64 * 1024

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        upload_max_bytes: int | None = None,
        upload_prefixes: tuple[str, ...] = ("/v1/recommendations", "/v1/datasets"),
    ) -> None:
        self.app = app
        self.default_max = max_bytes
        self.upload_max = (upload_max_bytes + self.MULTIPART_SLACK) if upload_max_bytes else max_bytes
        self.upload_setting = upload_max_bytes or max_bytes  # the limit as configured, for messages
        self.upload_prefixes = upload_prefixes

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if self._is_upload(scope):
            return self.upload_max, "MOLFUSION_UPLOAD_MAX_BYTES"
        return self.default_max, "MOLFUSION_MAX_REQUEST_BYTES"

    def _is_upload(self, scope: Scope) -> bool:
        return scope.get("method") == "POST" and scope.get("path", "").startswith(self.upload_prefixes)

    def _detail(self, scope: Scope, size: int | None, limit: int, setting: str) -> str | list[dict]:
        """The message; for uploads in the upload routes' own shape (``detail[0].loc`` names the file)."""
        got = f"{size} bytes" if size is not None else "more"
        if self._is_upload(scope):
            message = (
                f"request body too large: {got} > {limit} bytes (the upload limit {self.upload_setting} "
                f"bytes, {setting}, plus room for the multipart form)"
            )
            return [{"loc": ["body", "file"], "msg": message, "type": "invalid_upload"}]
        return f"request body too large: {got} > {limit} bytes ({setting})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > limit:
                    await _send_json(send, 413, {"detail": self._detail(scope, declared, limit, setting)})
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=self._detail(scope, None, limit, setting))
            return message

        await self.app(scope, limited_receive, send)


async def _send_json(send: Send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
