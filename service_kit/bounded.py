"""Bounded request bodies, checked while they stream in (docs/security.md, "Bounded HTTP").

:func:`install_body_limits` puts one ASGI middleware in front of a service. For every
request it finds the route, then, before the application sees a byte:

1. a route whose class is marked ``bmfl_signed`` (the services' signed route classes)
   needs well-formed, fresh ``X-BMFL-Signature`` / ``X-BMFL-Time`` headers: 401
   ``unsigned`` / ``bad_signature`` before the body is read (the route class still
   recovers the signer over the body and authorizes it);
2. a ``Content-Length`` over the route's cap is refused at once, and a body (chunked or
   not) is counted as it arrives: 413 ``body_too_large`` as soon as it passes the cap,
   without reading further (the connection is closed);
3. a form route (``Form``/``File`` parameters) takes exactly the parts it declares:
   multipart bodies go through ``python_multipart``'s streaming parser, so an unknown
   part (422 ``unknown_part``), a repeated one (422 ``repeated_part``), a part over its
   own cap (413 ``too_large``) or one part too many (400 ``too_many_parts``) is refused
   the moment its headers or its bytes arrive.

Only a body that passed is handed to the application, from memory; nothing of a refused
request is written anywhere, and no request holds more than its route's cap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, params
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.routing import Match

from bmfl.protocol.signing import SIGNATURE_HEADER, TIME_HEADER, SignatureError, check_fresh

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PART_OVERHEAD = 1024
"""Bytes allowed per form part beyond its data (boundary line, part headers)."""
MAX_PART_HEADER_BYTES = 8 * 1024
SIGNATURE_RE = re.compile(r"(0x)?[0-9a-fA-F]{130}")
TIME_RE = re.compile(r"[0-9]{1,19}")


class Refused(Exception):
    """A request refused before the application saw it."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


@dataclass(frozen=True)
class RoutePolicy:
    """What one route accepts: ``signed`` (headers checked before the body), at most
    ``max_bytes`` of body, and for a form route the parts it takes with each one's cap."""

    max_bytes: int
    signed: bool = False
    parts: Mapping[str, int] | None = None  # form field name → largest size; None: not a form


def check_signature_headers(headers: Mapping[str, str]) -> None:
    """401 ``unsigned`` without ``X-BMFL-Signature``; ``bad_signature`` unless it is 65
    bytes of hex and ``X-BMFL-Time`` an integer within the allowed clock skew."""
    signature, timestamp = headers.get(SIGNATURE_HEADER.lower()), headers.get(TIME_HEADER.lower())
    if not signature:
        raise Refused(401, "unsigned", f"missing {SIGNATURE_HEADER}")
    if not SIGNATURE_RE.fullmatch(signature):
        raise Refused(401, "bad_signature", f"{SIGNATURE_HEADER} is not 65 bytes of hex")
    if not timestamp or not TIME_RE.fullmatch(timestamp):
        raise Refused(401, "bad_signature", f"{TIME_HEADER} is missing or not an integer")
    try:
        check_fresh(int(timestamp))
    except SignatureError as exc:
        raise Refused(401, "bad_signature", str(exc)) from None


class _FormLimiter:
    """Feeds a multipart body to ``python_multipart``'s parser chunk by chunk and refuses
    it at the first unknown, repeated, oversized or surplus part."""

    def __init__(self, boundary: bytes, parts: Mapping[str, int]) -> None:
        self.parts, self.seen, self.count, self.error = parts, set[str](), 0, None
        self.name: str | None = None
        self.size = self.header_bytes = 0
        self.header_field = self.header_value = b""
        self.disposition: bytes | None = None
        callbacks = {
            "on_part_begin": self._begin, "on_header_field": self._field, "on_header_value": self._value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_done, "on_part_data": self._data,
        }  # fmt: skip
        self.parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def _fail(self, status: int, reason: str, detail: str) -> None:
        if self.error is None:
            self.error = Refused(status, reason, detail)

    def _begin(self) -> None:
        self.name, self.size, self.header_bytes, self.disposition = None, 0, 0, None
        self.header_field = self.header_value = b""
        self.count += 1
        if self.count > len(self.parts):
            self._fail(400, "too_many_parts", f"this route takes at most {len(self.parts)} parts: {sorted(self.parts)}")

    def _count_header(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            self._fail(400, "bad_multipart", f"part headers over {MAX_PART_HEADER_BYTES} bytes")

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        if self.error is None:
            self.header_field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        if self.error is None:
            self.header_value += data[start:end]

    def _header_end(self) -> None:
        if self.header_field.strip().lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_field = self.header_value = b""

    def _headers_done(self) -> None:
        if self.error is not None:
            return
        _, options = parse_options_header(self.disposition or b"")
        raw = options.get(b"name")
        if raw is None:
            return self._fail(400, "bad_multipart", "a part without a Content-Disposition name")
        name = raw.decode("latin-1")
        if name not in self.parts:
            return self._fail(422, "unknown_part", f"unexpected part {name[:64]!r}; this route takes {sorted(self.parts)}")
        if name in self.seen:
            return self._fail(422, "repeated_part", f"part {name!r} given twice")
        self.seen.add(name)
        self.name = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None or self.name is None:
            return
        self.size += end - start
        if self.size > self.parts[self.name]:
            self._fail(413, "too_large", f"part {self.name!r} exceeds {self.parts[self.name]} bytes")

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except Exception as exc:  # python_multipart raises its parse errors (and ours, from callbacks)
            self._fail(400, "bad_multipart", f"malformed multipart body: {exc}")
        if self.error is not None:
            raise self.error


def _check_urlencoded(body: bytes, parts: Mapping[str, int]) -> None:
    seen: set[str] = set()
    for name, value in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
        if name not in parts:
            raise Refused(422, "unknown_part", f"unexpected field {name[:64]!r}; this route takes {sorted(parts)}")
        if name in seen:
            raise Refused(422, "repeated_part", f"field {name!r} given twice")
        seen.add(name)
        if len(value) > parts[name]:
            raise Refused(413, "too_large", f"field {name!r} exceeds {parts[name]} bytes")


class BoundedBodies:
    """The ASGI middleware; see the module docstring. ``policy(scope)`` picks the route's."""

    def __init__(self, app: Any, policy: Callable[[Scope], RoutePolicy]) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        policy = self.policy(scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            if policy.signed:
                check_signature_headers(headers)
            body = await self._read(receive, policy, headers)
        except Refused as exc:
            return await _refuse(send, exc)
        if body is None:  # the client went away
            return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, policy: RoutePolicy, headers: Mapping[str, str]) -> bytes | None:
        cap = policy.max_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise Refused(413, "body_too_large", f"Content-Length {length} exceeds this route's {cap}-byte limit")
        content_type, options = parse_options_header(headers.get("content-type", ""))
        limiter = None
        if policy.parts is not None and content_type == b"multipart/form-data":
            boundary = options.get(b"boundary")
            if not boundary:
                raise Refused(400, "bad_multipart", "multipart/form-data without a boundary")
            limiter = _FormLimiter(boundary, policy.parts)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > cap:
                raise Refused(413, "body_too_large", f"the body exceeds this route's {cap}-byte limit")
            if chunk:
                if limiter is not None:
                    limiter.feed(chunk)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if policy.parts is not None and content_type == b"application/x-www-form-urlencoded":
            _check_urlencoded(body, policy.parts)
        return body


async def _refuse(send: Send, exc: Refused) -> None:
    """The problem body; ``Connection: close`` since the rest of the body is left unread."""
    payload = json.dumps({"reason": exc.reason, "detail": exc.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def install_body_limits(
    app: FastAPI,
    json_bytes: int,
    part_bytes: Mapping[tuple[str, str], Mapping[str, int]] | None = None,
    raw_bytes: Mapping[tuple[str, str], int] | None = None,
) -> None:
    """Cap every route of ``app``: JSON and bodiless routes at ``json_bytes``; form routes
    take their declared ``Form``/``File`` parts, each at most ``json_bytes`` unless
    ``part_bytes[(method, path template)][name]`` says otherwise (model blobs, test sets).
    A route that reads its body as raw bytes (no form) takes ``raw_bytes[(method, path
    template)]`` bytes instead of ``json_bytes``. Signed routes are the routes whose class
    has ``bmfl_signed = True``. Call it after including the routers."""
    overrides = {(m.upper(), p): dict(v) for (m, p), v in (part_bytes or {}).items()}
    raw = {(m.upper(), p): n for (m, p), n in (raw_bytes or {}).items()}
    routes = [(matcher, route_policy(route, path, methods, json_bytes, overrides, raw), path, methods)
              for matcher, route, path, methods in _flat_routes(app.router.routes)]  # fmt: skip
    for (method, path), sizes in overrides.items():  # a misnamed route or part fails here, not in production
        named = [p.parts or {} for _, p, rpath, methods in routes if rpath == path and method in methods]
        if not named or set(sizes) - set(named[0]):
            raise ValueError(f"body limits name parts {sorted(sizes)} of {method} {path}, which takes no such form parts")
    for method, path in raw:
        if not any(rpath == path and method in methods and p.parts is None for _, p, rpath, methods in routes):
            raise ValueError(f"a raw body limit names {method} {path}, which is no route without form parts")
    default = RoutePolicy(json_bytes)

    def policy(scope: Scope) -> RoutePolicy:
        for matcher, found, _, _ in routes:
            if matcher.matches(scope)[0] is Match.FULL:
                return found
        return default

    app.add_middleware(BoundedBodies, policy=policy)


def route_policy(
    route: Any,
    path: str,
    methods: set[str],
    json_bytes: int,
    overrides: Mapping[tuple[str, str], Mapping[str, int]],
    raw: Mapping[tuple[str, str], int] | None = None,
) -> RoutePolicy:
    """A route's policy: signed if its class says so; its form parts from its parameters;
    a route without them takes ``json_bytes``, or its entry in ``raw``."""
    signed = bool(getattr(route, "bmfl_signed", False))
    dependant = getattr(route, "dependant", None)
    fields = [f for f in (dependant.body_params if dependant else []) if isinstance(f.field_info, params.Form)]
    if not fields:
        caps = [n for (method, rpath), n in (raw or {}).items() if rpath == path and method in methods]
        return RoutePolicy(caps[0] if caps else json_bytes, signed)
    parts = {f.alias: json_bytes for f in fields}
    for method in methods:
        parts |= overrides.get((method, path), {})
    return RoutePolicy(sum(parts.values()) + PART_OVERHEAD * len(parts), signed, parts)


def _flat_routes(routes: list[Any]) -> Iterator[tuple[Any, Any, str, set[str]]]:
    """(matcher, route, full path, methods) of every route, included routers unfolded
    (FastAPI ≥ 0.16x includes routers lazily; older ones copy their routes)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            for candidate in route.effective_candidates():
                if hasattr(candidate, "effective_candidates"):
                    yield from _flat_routes([candidate])
                else:
                    yield candidate, candidate.original_route, candidate.path, set(candidate.methods or ())
        else:
            yield route, route, getattr(route, "path", ""), set(getattr(route, "methods", None) or ())
