"""Every rejected request gets a 4xx with `{"error": "<what was wrong>"}`.

`BodySizeLimit` refuses oversized bodies before anything parses them (by Content-Length when
given, else by counting while reading); the handlers turn validation errors, HTTP errors and
GanforgeError into one JSON shape whose message names the field and the problem.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ganforge.errors import GanforgeError


def _json(status: int, error: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


class BodySizeLimit:
    """Pure ASGI middleware: a request body over `max_bytes` is answered 413 unread."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}  # larger limits for upload routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        too_big = f"request body too large: the limit is {limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _json(400, "invalid Content-Length header")(scope, receive, send)
                    return
                if declared > limit:
                    await _json(413, too_big)(scope, receive, send)
                    return
        # Read the body here (it is small by now) so a chunked upload is bounded too.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _json(413, too_big)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "z", 3) -> "z[3]"; ("query", "seeds") -> "seeds"."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path") else list(loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or (str(loc[0]) if loc else "request")


# Friendlier words for fields whose schema is a regular expression.
FORMS = {"seeds": "must look like 0,3,5-9 (seeds and inclusive ranges)",
         "format": "must be gif or png"}


def _message(err: dict[str, Any]) -> str:
    kind, ctx = err.get("type"), err.get("ctx") or {}
    where = _where(err.get("loc", ()))
    if kind == "json_invalid":
        reason = ctx.get("error", "")
        return f"request body is not valid JSON ({reason})" if reason else \
            "request body is not valid JSON"
    if where == "body" and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "request body must be a JSON object (send Content-Type: application/json)"
    if kind == "finite_number":
        return f"{where}: must be a finite number (NaN and Infinity are not allowed)"
    if kind == "too_short":
        return f"{where}: needs at least {ctx.get('min_length')} values, got " \
               f"{ctx.get('actual_length')}"
    if kind == "too_long":
        return f"{where}: takes at most {ctx.get('max_length')} values"
    if kind == "string_pattern_mismatch" and where.split(".")[-1] in FORMS:
        return f"{where}: {FORMS[where.split('.')[-1]]}"
    return f"{where}: {err.get('msg', 'invalid value')}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        # Each error's echo of the input is left out: it may be NaN, which JSON cannot carry.
        detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in errors[:20]]
        shown = "; ".join(_message(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return _json(422, shown + more, detail)

    @app.exception_handler(HTTPException)
    async def http_error(_req: Request, exc: HTTPException) -> JSONResponse:
        response = _json(exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(GanforgeError)
    async def user_error(_req: Request, exc: GanforgeError) -> JSONResponse:
        return _json(400, str(exc))

    @app.exception_handler(json.JSONDecodeError)
    async def bad_json(_req: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return _json(400, f"request body is not valid JSON ({exc.msg})")
