"""Exceptions raised by the blob codec, the CID builder and the stores."""

from __future__ import annotations

from enum import Enum


class BlobError(Exception):
    """Base class of every blob error."""


class CodecReason(str, Enum):
    """Why a blob was refused by the codec (a stable code services map to HTTP 4xx)."""

    EMPTY = "empty"
    OVERSIZE = "oversize"
    TRUNCATED = "truncated"
    HEADER_OVERFLOW = "header_length_overflow"
    MALFORMED = "malformed"
    METADATA = "metadata"
    DUPLICATE_TENSOR = "duplicate_tensor"
    MISSING_TENSOR = "missing_tensor"
    EXTRA_TENSOR = "extra_tensor"
    DTYPE = "dtype"
    SHAPE = "shape"
    NON_FINITE = "non_finite"
    MODEL = "model"


class BlobCodecError(BlobError, ValueError):
    """A model blob that does not decode to the expected model state."""

    def __init__(self, reason: CodecReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidCIDError(BlobError, ValueError):
    """A string that is not a CID this platform supports."""


class BlobNotFoundError(BlobError, KeyError):
    """No blob with that CID in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "blob not found"


class BlobIntegrityError(BlobError):
    """Bytes that do not match their CID (tampered, corrupted, or a lying peer)."""


class BlobTooLargeError(BlobError):
    """A remote blob larger than the caller's limit."""


class RemoteError(BlobError):
    """An IPFS node or gateway failed, or kept failing after bounded retries."""
