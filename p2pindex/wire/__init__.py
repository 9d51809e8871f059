"""Bytes to messages and back: the message schemas and the frame codec that enforces them."""

from p2pindex.wire.codec import MAX_REQUEST_ID, MESSAGE_TYPES, Decoded, FrameDecoder, encode_frame

__all__ = ["MAX_REQUEST_ID", "MESSAGE_TYPES", "Decoded", "FrameDecoder", "encode_frame"]
