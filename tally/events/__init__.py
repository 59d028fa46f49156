"""The event: Tally's one schema (`schema`), decoded in batches (`decode`, msgspec) on every hot path."""

from tally.events.decode import decode_batch, decode_messages, ndjson_lines
from tally.events.schema import Event, EventError, encode_event

__all__ = ["Event", "EventError", "decode_batch", "decode_messages", "ndjson_lines", "encode_event"]
