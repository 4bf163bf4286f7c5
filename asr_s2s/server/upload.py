"""A multipart/form-data upload, streamed to a file in the request's temporary folder under a size limit.

Starlette's own form parser spools files over 1 MB to anonymous files in the system's temporary folder and
knows no size limit for them; this one writes the one audio file straight into the folder the request owns
(removed with it), refuses a body over the limit as soon as it is seen (413), and keeps form fields small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from asr_s2s.server.openai_schema import ApiError

MAX_FIELDS = 64  # form fields besides the file
MAX_FIELD_BYTES = 64 * 1024  # one field's value (a prompt is a few hundred characters)
FORM_OVERHEAD_BYTES = 1024 * 1024  # headers and fields a body may hold beyond its file
CURL_HINT = "send the audio as multipart form field 'file' (curl -F file=@audio.wav -F model=MODEL ...)"


@dataclass
class Upload:
    """A parsed form: each field's values in order, and the uploaded file (``path`` None when there was none)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file_field: str | None = None  # the field the file came in
    filename: str = "upload"  # the client's name for it, made safe to show (no folders, no control characters)
    path: Path | None = None
    size: int = 0


def safe_filename(name: str) -> str:
    """The last part of a client's file name, without control characters, at most 100 characters."""
    name = re.split(r"[\\/]", name)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()[:100]
    return name if name not in ("", ".", "..") else "upload"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the upload is larger than this server's limit of {limit / 2**20:g} MB (--max-upload-mb)",
                    param="file", code="file_too_large")


class _Parser:
    """Callbacks of python-multipart's streaming parser, writing the file part to ``folder``."""

    def __init__(self, folder: Path, max_bytes: int, charset: str = "utf-8") -> None:
        self.folder, self.max_bytes, self.charset = folder, max_bytes, charset
        self.upload = Upload()
        self._header_name = self._header_value = b""
        self._disposition: bytes | None = None
        self._name: str = ""
        self._data = bytearray()
        self._file: BinaryIO | None = None
        self.ended = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data, "on_part_end": self.on_part_end,
                "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
                "on_end": self.on_end}

    def on_end(self) -> None:
        self.ended = True

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._data = None, "", bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "a form part has no name (Content-Disposition: form-data; name=...)")
        self._name = options[b"name"].decode(self.charset, errors="replace")
        if b"filename" not in options:
            if sum(len(v) for v in self.upload.fields.values()) >= MAX_FIELDS:
                raise ApiError(400, f"too many form fields (at most {MAX_FIELDS})")
            return
        if self.upload.path is not None:
            raise ApiError(400, f"more than one file in the form ({self.upload.file_field!r} and {self._name!r}); "
                                "send one audio file per request", param=self._name)
        filename = safe_filename(options[b"filename"].decode(self.charset, errors="replace"))
        suffix = Path(filename).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""
        self.upload.file_field, self.upload.filename = self._name, filename
        self.upload.path = self.folder / f"upload{suffix}"
        self._file = open(self.upload.path, "xb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise _too_large(self.max_bytes)
            self._file.write(data[start:end])
            return
        if len(self._data) + end - start > MAX_FIELD_BYTES:
            raise ApiError(400, f"form field {self._name!r} is longer than {MAX_FIELD_BYTES // 1024} KB", param=self._name)
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        else:
            self.upload.fields.setdefault(self._name, []).append(self._data.decode(self.charset, errors="replace"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def receive_upload(request, folder: Path, max_bytes: int) -> Upload:
    """Read a multipart/form-data request body; its file goes to ``folder``.

    :raises ApiError: 400 for a body that is not multipart/form-data or is malformed, 413 for one over
        ``max_bytes`` of file (refused from its Content-Length before reading, when it gives one).
    """
    from python_multipart import MultipartParser
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(400, f"expected a multipart/form-data body; {CURL_HINT}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD_BYTES:
        raise _too_large(max_bytes)
    charset = options.get(b"charset", b"utf-8").decode("latin-1")
    parser = _Parser(folder, max_bytes, charset if charset.lower() in ("utf-8", "utf8", "latin-1") else "utf-8")
    try:
        multipart = MultipartParser(options[b"boundary"], parser.callbacks())
        async for chunk in request.stream():
            multipart.write(chunk)
        multipart.finalize()
    except FormParserError as exc:
        raise ApiError(400, f"malformed multipart/form-data body ({exc}); {CURL_HINT}") from None
    finally:
        parser.close()
    if not parser.ended:
        raise ApiError(400, f"the multipart/form-data body ends before its closing boundary; {CURL_HINT}")
    return parser.upload
