"""The event: Tally's one schema, decoded in batches (msgspec) on every hot path."""

from tally.events.schema import Event, EventError, decode_batch, decode_messages, decode_ndjson, encode_event

__all__ = ["Event", "EventError", "decode_batch", "decode_messages", "decode_ndjson", "encode_event"]
