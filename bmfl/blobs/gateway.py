"""``GET /ipfs/{cid}`` served from a :class:`BlobStore`, the path Kubo's gateway uses."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from bmfl.blobs.errors import BlobIntegrityError, BlobNotFoundError, InvalidCIDError, RemoteError
from bmfl.blobs.store import BlobStore

IMMUTABLE = "public, max-age=29030400, immutable"


def gateway_router(store: BlobStore) -> APIRouter:
    """A router to mount at the root of a FastAPI app (the path carries ``/ipfs``)."""
    router = APIRouter(tags=["ipfs"])

    @router.get("/ipfs/{cid}", response_class=Response)
    def get_blob(cid: str) -> Response:
        try:
            data = store.get(cid)
        except InvalidCIDError as exc:
            raise HTTPException(400, str(exc)) from None
        except BlobNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except RemoteError as exc:  # the store is down: clients retry 503 with backoff
            raise HTTPException(503, f"blob store unavailable: {exc}") from None
        except BlobIntegrityError as exc:
            raise HTTPException(500, f"stored blob failed verification: {exc}") from None
        headers = {"Cache-Control": IMMUTABLE, "ETag": f'"{cid}"', "X-Ipfs-Path": f"/ipfs/{cid}"}
        return Response(data, media_type="application/octet-stream", headers=headers)

    return router
