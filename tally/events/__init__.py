"""The event: Tally's one schema (`schema`), decoded in batches (`decode`, msgspec) on every hot path."""

from tally.events.decode import decode_batch, decode_messages, decode_ndjson
from tally.events.schema import Event, EventError, encode_event

__all__ = ["Event", "EventError", "decode_batch", "decode_messages", "decode_ndjson", "encode_event"]
