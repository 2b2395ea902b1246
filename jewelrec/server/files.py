"""Files the server sends as they are (the page, the widget, catalog images, the docs' assets),
with a browser's conditional request answered 304 Not Modified.

Starlette's FileResponse always sends the whole file (only StaticFiles weighs validators), so a
shop's product page fetched widget.js again once its cache time ran out, and every catalog
image too, although image names are their content's hash and never change.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path

from fastapi.responses import FileResponse, Response
from starlette.requests import Request
from starlette.responses import MalformedRangeHeader

# A catalog image's name is its content's SHA-256 (catalog/ingest.py): it never changes.
IMMUTABLE = "public, max-age=31536000, immutable"
_VALIDATORS = ("etag", "last-modified", "cache-control")


class _File(FileResponse):
    """A FileResponse that sends the whole file for a Range it cannot read (another unit, an
    end before its start), as RFC 9110 (14.2) has a server do, instead of a 400 in plain text
    (the one error of this server that was not JSON); an unsatisfiable range is still a 416."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no range: the whole file


def file_answer(request: Request, path: Path, *, cache_control: str,
                media_type: str | None = None) -> Response:
    """`path` (a file the caller checked) with its validators, or an empty 304 when the
    browser's copy is current. OSError when the file went away meanwhile."""
    answer = _File(path, media_type=media_type, stat_result=path.stat(),
                   headers={"cache-control": cache_control})
    if not_modified(request.headers, answer.headers):
        return Response(status_code=304,
                        headers={k: answer.headers[k] for k in _VALIDATORS if k in answer.headers})
    return answer


def not_modified(asked: Mapping[str, str], sent: Mapping[str, str]) -> bool:
    """Whether the request's If-None-Match (weak comparison), else its If-Modified-Since,
    says its copy is the file's current one (RFC 9110, 13.1.2 and 13.1.3)."""
    tags = asked.get("if-none-match")
    if tags is not None:
        listed = {tag.strip().removeprefix("W/") for tag in tags.split(",")}
        return "*" in listed or sent.get("etag", "").removeprefix("W/") in listed
    since, modified = asked.get("if-modified-since"), sent.get("last-modified")
    if not since or not modified:
        return False
    try:
        return parsedate_to_datetime(modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):  # a date no one can read: send the file
        return False
