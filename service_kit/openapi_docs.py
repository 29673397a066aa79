"""What the OpenAPI schema says about signed routes and problem bodies: the two signature
headers as parameters, and per status the ``{"reason", "detail"}`` body with the reason
codes a route answers with (docs/protocol.md gives the signed text)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute

from bmfl.protocol.schemas import Problem
from bmfl.protocol.signing import MAX_CLOCK_SKEW_S, SIGNATURE_HEADER, TIME_HEADER

SIGNATURE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": SIGNATURE_HEADER, "in": "header", "required": True,
        "schema": {"type": "string", "pattern": "^0x[0-9a-fA-F]{130}$"},
        "description": (
            "EIP-191 personal_sign (0x + 65 bytes r‖s‖v as hex) by the caller's key of the text "
            "`BMFL request v1\\nchain {chain id}\\n{METHOD} {path}\\nbody {sha256 hex of the raw body}\\ntime {X-BMFL-Time}` "
            "(docs/protocol.md, 'Signed requests')"
        ),
    },
    {
        "name": TIME_HEADER, "in": "header", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"},
        "description": f"the signing time in unix milliseconds; refused more than {MAX_CLOCK_SKEW_S} s from the server's clock",
    },
]  # fmt: skip

SIGNED = {401: ["unsigned", "bad_signature"]}
BOUNDED = {413: ["body_too_large", "too_large"], 422: ["unknown_part", "repeated_part"], 400: ["too_many_parts", "bad_multipart"]}
UNAVAILABLE = {503: ["chain_unavailable", "blob_store_unavailable"]}


def problem_responses(*groups: dict[int, list[str]]) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=``: per status the Problem body and its reason codes."""
    merged: dict[int, list[str]] = {}
    for group in groups:
        for status, reasons in group.items():
            merged.setdefault(status, []).extend(r for r in reasons if r not in merged.get(status, []))
    return {
        status: {"model": Problem, "description": "Problem body; reason one of: " + ", ".join(f"`{r}`" for r in reasons)}
        for status, reasons in sorted(merged.items())
    }


def signed_openapi(extra: dict[str, Any] | None) -> dict[str, Any]:
    """``openapi_extra`` of a signed route: its own plus the signature headers."""
    extra = dict(extra or {})
    extra["parameters"] = [*extra.get("parameters", []), *SIGNATURE_PARAMETERS]
    return extra


def signed_responses(responses: dict[int | str, Any] | None) -> dict[int | str, Any]:
    """``responses`` of a signed route: its own plus 401 ``unsigned`` / ``bad_signature``."""
    out = problem_responses(SIGNED)
    out.update(responses or {})
    return out


class SignedDocsRoute(APIRoute):
    """An ``APIRoute`` whose OpenAPI operation lists the signature headers and the 401s
    (the services' signed route classes derive from it)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["openapi_extra"] = signed_openapi(kwargs.get("openapi_extra"))
        kwargs["responses"] = signed_responses(kwargs.get("responses"))
        super().__init__(path, endpoint, **kwargs)
