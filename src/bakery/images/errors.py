"""Why an upload was refused: a short machine code and a precise human message."""

from __future__ import annotations


class ImageError(ValueError):
    """Upload rejected; .code is a short machine string, str(exc) a precise human message."""

    code: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UploadTooLarge(ImageError):
    """More bytes arrived than the caller allows (the API answers 413)."""

    def __init__(self, message: str) -> None:
        super().__init__("too_large", message)
