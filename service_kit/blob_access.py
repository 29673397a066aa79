"""Open the blob store a service is configured with: a directory (local mode, shared by
the services on one machine) or ``kubo:http://host:5001`` (a Kubo daemon)."""

from __future__ import annotations

from bmfl.blobs.store import BlobStore


def open_store(spec: str) -> BlobStore:
    if spec.startswith("kubo:"):
        from bmfl.blobs.kubo import KuboBlobStore

        return KuboBlobStore(spec.removeprefix("kubo:"))
    from bmfl.blobs.local import LocalBlobStore

    return LocalBlobStore(spec)
