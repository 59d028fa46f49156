"""Reading an ingest body: its media type, gzip (every member), and the size limit while streaming.

The limit holds for the bytes received and for the bytes they decompress to, checked as they
arrive, so neither a huge upload nor a gzip bomb is ever held in memory past the limit.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from tally.events.schema import BodyError

JSON_TYPES = frozenset({"application/json"})
# NDJSON has several names in the wild; they all mean one JSON document per line.
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"})


class TooLarge(Exception):
    pass


class UnsupportedMediaType(Exception):
    pass


def is_ndjson(request: Request) -> bool:
    """NDJSON or JSON by Content-Type; none at all is taken as JSON, as many HTTP libraries send
    bytes without one (curl's form-urlencoded default is refused: it is not JSON)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in NDJSON_TYPES:
        return True
    if not media or media in JSON_TYPES:
        return False
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not accepted; send application/json (an event or an array of events)"
        " or application/x-ndjson (an event per line)"
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed if gzip; TooLarge as soon as either side passes `limit`."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise BodyError(f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    gunzip = None if encoding == "identity" else Gunzip(limit)
    out = bytearray()
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge
        if gunzip is None:
            out += chunk
        else:
            gunzip.feed(chunk, out)
        if len(out) > limit:
            raise TooLarge
    if gunzip is not None:
        gunzip.finish()
    return bytes(out)


class Gunzip:
    """Streaming gunzip of every member: `cat a.gz b.gz`, and many log shippers, send several, and
    each must be read (zlib alone stops after the first and leaves the rest as unused data)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.started = False  # the current member has received input

    def feed(self, data: bytes, out: bytearray) -> None:
        while data:
            self.started = True
            try:
                out += self.member.decompress(data, self.limit + 1 - len(out))
            except zlib.error as e:
                raise BodyError(f"the gzip body is corrupt: {e}") from e
            if len(out) > self.limit:
                raise TooLarge
            if self.member.eof:
                data = self.member.unused_data
                self.member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                self.started = False
            else:
                data = self.member.unconsumed_tail

    def finish(self) -> None:
        if self.started:
            raise BodyError("the gzip body is truncated")
