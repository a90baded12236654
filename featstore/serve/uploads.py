"""Uploaded files: read to a private temporary file within a size limit, and accepted only when Pillow
recognises an image format featstore decodes."""
from __future__ import annotations

import io
import os
import tempfile

from PIL import Image

from featstore.errors import FeatstoreError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024          # per file
MAX_FILES = 16                               # per request
FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
CHUNK = 1 << 20


class UploadError(FeatstoreError):
    """An upload refused: `status` is the HTTP status to answer with (413 too large, 415 not an image)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def save_upload(upload, folder: str, limit: int | None = None) -> tuple[str, str]:
    """(the name the client gave, a local path holding its bytes) for one starlette UploadFile."""
    limit = MAX_UPLOAD_BYTES if limit is None else limit
    name = os.path.basename(upload.filename or "upload")
    data = bytearray()
    while chunk := upload.file.read(CHUNK):
        data += chunk
        if len(data) > limit:
            raise UploadError(f"{name}: over the upload limit of {limit // (1024 * 1024)} MB", 413)
    if not data:
        raise UploadError(f"{name}: empty file", 415)
    try:
        kind = Image.open(io.BytesIO(bytes(data))).format
    except Exception:
        kind = None
    if kind not in FORMATS:
        raise UploadError(f"{name}: not an image (accepted: {', '.join(sorted(FORMATS))})", 415)
    fd, path = tempfile.mkstemp(prefix="upload-", suffix="." + kind.lower(), dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return name, path
