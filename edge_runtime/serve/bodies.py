"""Request bodies of POST /api/predict: an image file (raw or multipart field `file`) or JSON pixels.

Every problem raises HTTPError with a status and a one-line message; nothing here returns a 500.
"""

import json
import re

DEFAULT_MAX_BODY_BYTES = 20_000_000  # a few phone photos; `serve --max-body-bytes` changes it
MAX_FEEDBACK_BYTES = 10_000  # an id and a label: anything longer is not feedback


class HTTPError(Exception):
    """A request the service refuses: an HTTP status and a one-line message for {"error": ...}."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def read_body(environ, limit):
    """Return the request body, refusing one over `limit` bytes from its Content-Length (413).

    waitress itself refuses larger bodies before reading them (see server.py); this check keeps
    the limit when the app runs under another WSGI server.
    """
    length_text = environ.get("CONTENT_LENGTH") or "0"
    try:
        length = int(length_text)
    except ValueError:
        raise HTTPError(400, f"bad Content-Length {length_text[:20]!r}") from None
    if length > limit:
        raise HTTPError(413, f"request body of {length:,} bytes is over the {limit:,}-byte limit")
    if length <= 0:
        raise HTTPError(400, "empty request body: send an image file, a multipart field 'file', or JSON pixels")
    return environ["wsgi.input"].read(length)


def media_type(environ):
    """The request's media type without parameters, lower-case ('' when absent)."""
    return environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()


def multipart_file(body, content_type, field="file"):
    """Return (filename, bytes) of the multipart/form-data part named `field`.

    A small parser of RFC 7578 bodies: parts are split on the boundary, each part's headers end at
    the first blank line. (The standard library's `cgi` is gone from Python 3.13.)
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if not match:
        raise HTTPError(400, "multipart body without a boundary in its Content-Type")
    delimiter = b"--" + match.group(1).strip().encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        headers, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise HTTPError(400, "malformed multipart body: a part has no header/content separator")
        disposition = next((line for line in headers.decode("latin-1").split("\r\n")
                            if line.lower().startswith("content-disposition:")), "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name and name.group(1) == field:
            filename = re.search(r'\bfilename="([^"]*)"', disposition)
            data = content[:-2] if content.endswith(b"\r\n") else content
            return (filename.group(1) if filename and filename.group(1) else "upload"), data
    raise HTTPError(400, f"multipart body has no field {field!r} (send the image as field 'file')")


def json_document(body):
    """The decoded JSON body; HTTPError 400 with the decoder's one line when it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise HTTPError(400, f"request body is not valid JSON: {error}") from None


def json_pixels(body):
    """Return the `pixels` of a JSON body {"pixels": numbers shaped like one model input, or a batch}."""
    document = json_document(body)
    if not isinstance(document, dict) or "pixels" not in document:
        raise HTTPError(400, 'JSON body must be an object {"pixels": [...]} holding one image or a batch of them')
    return document["pixels"]
