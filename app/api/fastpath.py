"""Remembered ``POST /v1/predict`` requests answered before FastAPI's routing (pure ASGI middleware).

A repeated prediction request costs the service a few dictionary look-ups, but FastAPI's machinery
around it (routing, dependency solving, request-model validation, response objects) costs several
times more. :class:`PredictFastPath` answers a request itself only when the answer is certain to be
the one the route would give, byte for byte:

- ``POST /v1/predict`` with a ``Content-Length`` (not chunked) body of JSON media type, and the API
  key (when one is configured) present and right;
- a JSON object with exactly the shapes :class:`app.api.schemas.PredictRequest` accepts unchanged:
  ``smiles`` a non-empty list of strings within ``max_molecules_per_request``, ``properties`` absent,
  ``null`` or a non-empty list of served head names, no other keys;
- models loaded, and every input's result item remembered (:func:`app.api.predictions.memo_answer`).

Everything else (validation errors, 401/413/422/503, unremembered molecules, chunked bodies) goes
on to the app unchanged, with the body it has already read handed back to it. The answer is counted
like the route's: request count and latency under ``/v1/predict`` (via ``MetricsMiddleware``),
answered molecules and memo answers.
"""

from __future__ import annotations

import email.message
import functools
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import API_KEY_HEADER, api_key_ok
from app.api.predictions import JSON, memo_answer
from app.api.service import ModelService, NotReadyError, UnknownPropertyError
from app.metrics import ROUTE_SCOPE_KEY

PATH = "/v1/predict"
_KEY_HEADER = API_KEY_HEADER.lower().encode("latin-1")
_FIELDS = frozenset(("smiles", "properties"))


@functools.lru_cache(maxsize=64)
def _is_json(content_type: bytes) -> bool:
    """Whether FastAPI reads a body of this ``Content-Type`` as JSON (its own test, remembered per
    header value): ``application/json`` and ``application/*+json``."""
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _strings(value: object) -> bool:
    """A non-empty list of ``str`` (what ``list[str]`` with ``min_length=1`` passes through as is)."""
    return type(value) is list and len(value) > 0 and all(type(v) is str for v in value)


class PredictFastPath:
    """Answer fully remembered ``POST /v1/predict`` requests without entering the app (see module)."""

    def __init__(self, app: ASGIApp, service: ModelService) -> None:
        self.app = app
        self.service = service
        self.api_key = service.settings.api_key or None
        self.max_molecules = service.settings.max_molecules_per_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or self.service.responses is None
        ):
            await self.app(scope, receive, send)
            return
        length = -1
        content_type = key = None
        for name, value in scope["headers"]:  # the first of repeated headers counts, as in Starlette
            if name == b"content-length" and length < 0:
                length = int(value) if value.isdigit() else 0
            elif name == b"content-type" and content_type is None:
                content_type = value
            elif name == _KEY_HEADER and key is None:
                key = value
            elif name == b"transfer-encoding":  # framed by chunks, not by Content-Length
                length = 0
                break
        if length <= 0 or content_type is None or not _is_json(content_type) or not self._key_ok(key):
            await self.app(scope, receive, send)
            return

        # Read the whole body: no more than its Content-Length, which BodySizeLimit has already checked
        # against MOLFUSION_MAX_REQUEST_BYTES (so reading cannot fail with its 413 here).
        chunks: list[bytes] = []
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if messages[-1]["type"] == "http.request":
            answer = self._answer(body)
            if answer is not None:
                scope[ROUTE_SCOPE_KEY] = PATH
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(answer)).encode()),
                            (b"content-type", JSON.encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": answer})
                return
            replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
        else:  # the client went away mid-body: let the app see that, as it would have
            replay = messages

        async def replayed() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        await self.app(scope, replayed, send)

    def _key_ok(self, key: bytes | None) -> bool:
        """The check of :func:`app.api.deps.require_api_key` on the raw header value."""
        return api_key_ok(None if key is None else key.decode("latin-1"), self.api_key)

    def _answer(self, body: bytes) -> bytes | None:
        try:
            data = json.loads(body)  # what Starlette's Request.json() does
        except (ValueError, RecursionError):  # bad JSON or encoding, too deep: the route's 4xx
            return None
        if type(data) is not dict or not data.keys() <= _FIELDS:
            return None
        smiles = data.get("smiles")
        properties = data.get("properties")
        if not _strings(smiles) or len(smiles) > self.max_molecules:
            return None
        if properties is not None and not _strings(properties):
            return None
        try:
            heads = self.service.resolve_properties(properties)
        except (NotReadyError, UnknownPropertyError):
            return None
        return memo_answer(self.service, smiles, heads)
