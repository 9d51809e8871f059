"""Bytes <-> SWIM messages, in CBOR, with strict validation of everything that comes in.

A datagram is one CBOR array ``[version, sender, incarnation, msg, msg, ...]`` where every
message is itself an array starting with its ``Kind``. Messages are encoded once and
concatenated under an array header, so a packet can be filled to an exact byte budget.
Node ids written as lowercase hex travel as raw bytes (half the size of the text).

Decoding never trusts the input: any structural problem raises ``DecodeError`` whose
``reason`` names it for the statistics; unknown message kinds inside a datagram are skipped
(so newer peers can add kinds) and counted by the caller.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import cbor2

from p2pindex.core import strict_cbor
from p2pindex.errors import ProtocolError
from p2pindex.types import Address

from .messages import (
    STATE_CODES,
    STATES_BY_CODE,
    Ack,
    Alive,
    Control,
    Datagram,
    Dead,
    Kind,
    Nack,
    Ping,
    PingReq,
    PushPullDone,
    PushPullMessage,
    PushPullPush,
    PushPullReply,
    PushPullRequest,
    Record,
    Suspect,
)

VERSION = 1
MAX_ID_CHARS = 128
MAX_HOST_CHARS = 255
MAX_SIGNATURE = 128
MAX_U64 = (1 << 64) - 1
MAX_SEQ = (1 << 32) - 1

_HEX_ID = re.compile(r"(?:[0-9a-f]{2})+")


class DecodeError(ProtocolError):
    """Bytes that are not a valid SWIM message; ``reason`` is a statistics key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Sealer(Protocol):
    """Wraps whole datagrams (signing or encryption later); ``overhead`` is what seal adds."""

    @property
    def overhead(self) -> int: ...

    def seal(self, payload: bytes) -> bytes: ...

    def open(self, data: bytes, source: Address) -> bytes | None:
        """The payload, or None when the datagram from ``source`` fails verification."""
        ...


def valid_node_id(node_id: object) -> bool:
    return isinstance(node_id, str) and 0 < len(node_id) <= MAX_ID_CHARS


@functools.lru_cache(maxsize=1 << 16)
def _id_item(node_id: str) -> str | bytes:
    return bytes.fromhex(node_id) if _HEX_ID.fullmatch(node_id) else node_id


def array_header(count: int) -> bytes:
    if count < 24:
        return bytes((0x80 + count,))
    if count < 256:
        return bytes((0x98, count))
    if count < 65536:
        return bytes((0x99, count >> 8, count & 0xFF))
    return b"\x9a" + count.to_bytes(4, "big")


_SUSPECT = int(Kind.SUSPECT)
_DEAD = int(Kind.DEAD)

HEADER_SLACK = 3
"""Bytes an array header may need beyond one (up to 65535 items)."""


def encode_record(record: Record) -> bytes:
    if type(record) is Alive:
        address = record.address
        return _encode_alive(
            record.node_id,
            record.incarnation,
            address.host,
            address.port,
            STATE_CODES[record.state],
            record.signature,
            record.tokens_of,
        )
    kind = _SUSPECT if type(record) is Suspect else _DEAD
    return _encode_claim(kind, record.node_id, record.incarnation, record.accuser, record.signature)


@functools.lru_cache(maxsize=1 << 15)
def _encode_alive(
    node_id: str,
    incarnation: int,
    host: str,
    port: int,
    state: int,
    signature: bytes | None,
    tokens_of: str | None,
) -> bytes:
    """Cached: in a simulated cluster every table encodes the same records. A record with
    ``tokens_of`` carries it last, after the signature slot (null when unsigned)."""
    item = [Kind.ALIVE.value, _id_item(node_id), incarnation, host, port, state]
    if tokens_of is not None:
        return cbor2.dumps([*item, signature, _id_item(tokens_of)])
    return cbor2.dumps(item if signature is None else [*item, signature])


@functools.lru_cache(maxsize=1 << 15)
def _encode_claim(
    kind: int, node_id: str, incarnation: int, accuser: str, signature: bytes | None
) -> bytes:
    item = [kind, _id_item(node_id), incarnation, _id_item(accuser)]
    return cbor2.dumps(item if signature is None else [*item, signature])


def encode_control(message: Control) -> bytes:
    if isinstance(message, Ping):
        return cbor2.dumps([Kind.PING.value, message.seq, _id_item(message.target)])
    if isinstance(message, PingReq):
        address = message.address
        item = [Kind.PING_REQ.value, message.seq, _id_item(message.target), address.host]
        return cbor2.dumps([*item, address.port])
    kind = Kind.ACK if isinstance(message, Ack) else Kind.NACK
    return cbor2.dumps([kind.value, message.seq])


def datagram_prefix(sender: str, incarnation: int) -> bytes:
    """Encoded version, sender and incarnation: the items before the messages."""
    return cbor2.dumps(VERSION) + cbor2.dumps(_id_item(sender)) + cbor2.dumps(incarnation)


def assemble(prefix: bytes, prefix_items: int, parts: Sequence[bytes]) -> bytes:
    return array_header(prefix_items + len(parts)) + prefix + b"".join(parts)


MAX_DEPTH = 16
"""Nesting a datagram or push-pull payload may have; the deepest real one has four levels."""


# --- decoding ------------------------------------------------------------------------------


def _loads(data: bytes) -> Any:
    try:
        return strict_cbor.loads(data, MAX_DEPTH)
    except strict_cbor.MalformedCbor as exc:
        raise DecodeError("truncated" if exc.truncated else "malformed", str(exc)) from None


def _node_id(value: object) -> str:
    if type(value) is bytes and 0 < len(value) <= MAX_ID_CHARS // 2:
        return value.hex()
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS:
        return value
    raise DecodeError("malformed", "bad node id")


def _uint(value: object, limit: int = MAX_U64) -> int:
    if type(value) is int and 0 <= value <= limit:
        return value
    raise DecodeError("malformed", "bad integer")


def _address(host: object, port: object) -> Address:
    if type(host) is not str or not 0 < len(host) <= MAX_HOST_CHARS:
        raise DecodeError("malformed", "bad host")
    return Address(host, _uint(port, 65535))


def _signature(item: list[Any], fixed: int) -> bytes | None:
    if len(item) == fixed:
        return None
    if len(item) == fixed + 1:
        sig = item[fixed]
        if type(sig) is bytes and len(sig) <= MAX_SIGNATURE:
            return sig
    raise DecodeError("malformed", "bad record length or signature")


_RECORD_MEMO: dict[tuple[object, ...], Record] = {}
_RECORD_MEMO_LIMIT = 1 << 16


def decode_record(item: object) -> Record:
    """Memoised on the item's values and their types (so ``1`` and ``True`` stay apart):
    gossip delivers the same record to a node many times, and a simulated cluster decodes
    the same record in every node."""
    key: tuple[object, ...] | None = None
    if type(item) is list:
        try:
            key = (*item, *map(type, item))
            cached = _RECORD_MEMO.get(key)
        except TypeError:
            key = cached = None
        if cached is not None:
            return cached
    record = _decode_record(item)
    if key is not None:
        if len(_RECORD_MEMO) >= _RECORD_MEMO_LIMIT:
            _RECORD_MEMO.clear()
        _RECORD_MEMO[key] = record
    return record


def _decode_record(item: object) -> Record:
    if type(item) is not list or not item:
        raise DecodeError("malformed", "record is not an array")
    kind = item[0]
    if kind == Kind.ALIVE and type(kind) is int:
        if len(item) < 6:
            raise DecodeError("malformed", "short alive record")
        state = STATES_BY_CODE.get(item[5]) if type(item[5]) is int else None
        if state is None:
            raise DecodeError("malformed", "bad node state")
        if len(item) == 8:  # with tokens_of, after a signature slot that may be null
            signature = None if item[6] is None else _signature(item[:7], 6)
            tokens_of: str | None = _node_id(item[7])
        else:
            signature, tokens_of = _signature(item, 6), None
        return Alive(
            _node_id(item[1]),
            _uint(item[2]),
            _address(item[3], item[4]),
            state,
            signature,
            tokens_of,
        )
    if kind in (Kind.SUSPECT, Kind.DEAD) and type(kind) is int:
        if len(item) < 4:
            raise DecodeError("malformed", "short record")
        cls = Suspect if kind == Kind.SUSPECT else Dead
        return cls(_node_id(item[1]), _uint(item[2]), _node_id(item[3]), _signature(item, 4))
    raise DecodeError("malformed", "not a record")


def _decode_control(kind: int, item: list[Any]) -> Control:
    if kind == Kind.PING and len(item) == 3:
        return Ping(_uint(item[1], MAX_SEQ), _node_id(item[2]))
    if kind == Kind.PING_REQ and len(item) == 5:
        return PingReq(_uint(item[1], MAX_SEQ), _node_id(item[2]), _address(item[3], item[4]))
    if kind == Kind.ACK and len(item) == 2:
        return Ack(_uint(item[1], MAX_SEQ))
    if kind == Kind.NACK and len(item) == 2:
        return Nack(_uint(item[1], MAX_SEQ))
    raise DecodeError("malformed", f"bad message of kind {kind}")


_RECORD_KINDS = frozenset((Kind.ALIVE, Kind.SUSPECT, Kind.DEAD))
_CONTROL_KINDS = frozenset((Kind.PING, Kind.PING_REQ, Kind.ACK, Kind.NACK))


def decode_datagram(data: bytes) -> tuple[Datagram, int]:
    """The datagram and the number of messages of unknown kind it contained (skipped)."""
    value = _loads(data)
    if type(value) is not list or len(value) < 3:
        raise DecodeError("malformed", "not a datagram")
    if value[0] != VERSION or type(value[0]) is not int:
        raise DecodeError("version", f"version {value[0]!r}")
    sender = _node_id(value[1])
    incarnation = _uint(value[2])
    records: list[Record] = []
    controls: list[Control] = []
    unknown = 0
    for item in value[3:]:
        if type(item) is not list or not item or type(item[0]) is not int:
            raise DecodeError("malformed", "message is not an array")
        kind = item[0]
        if kind in _RECORD_KINDS:
            records.append(decode_record(item))
        elif kind in _CONTROL_KINDS:
            controls.append(_decode_control(kind, item))
        else:
            unknown += 1
    return Datagram(sender, incarnation, tuple(records), tuple(controls)), unknown


# --- push-pull (TCP) payloads ----------------------------------------------------------------


def _records_blob(encoded: Iterable[bytes]) -> bytes:
    parts = list(encoded)
    return array_header(len(parts)) + b"".join(parts)


def encode_push_pull(message: PushPullMessage, encoded_records: Iterable[bytes] = ()) -> bytes:
    """Encode ``message``; its records are given pre-encoded (the table caches them)."""
    head: list[Any]
    if isinstance(message, PushPullRequest):
        head = [Kind.PP_REQUEST.value, VERSION, _id_item(message.sender), message.join]
        head.append(message.buckets)
    elif isinstance(message, PushPullReply):
        differing = None if message.differing is None else list(message.differing)
        head = [Kind.PP_REPLY.value, VERSION, differing]
    elif isinstance(message, PushPullPush):
        head = [Kind.PP_PUSH.value, VERSION, _id_item(message.sender)]
    else:
        return cbor2.dumps([Kind.PP_DONE.value, VERSION])
    body = b"".join(cbor2.dumps(item) for item in head)
    return array_header(len(head) + 1) + body + _records_blob(encoded_records)


def _records(value: object, max_records: int) -> tuple[Record, ...]:
    if type(value) is not list or len(value) > max_records:
        raise DecodeError("malformed", "bad record list")
    return tuple(decode_record(item) for item in value)


def decode_push_pull(data: bytes, max_bytes: int, max_records: int) -> PushPullMessage:
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} bytes")
    value = _loads(data)
    if type(value) is not list or len(value) < 2 or type(value[0]) is not int:
        raise DecodeError("malformed", "not a push-pull message")
    if value[1] != VERSION or type(value[1]) is not int:
        raise DecodeError("version", f"version {value[1]!r}")
    kind = value[0]
    if kind == Kind.PP_REQUEST and len(value) == 6:
        join, buckets = value[3], value[4]
        if type(join) is not bool:
            raise DecodeError("malformed", "bad join flag")
        if buckets is not None and (type(buckets) is not bytes or len(buckets) % 8):
            raise DecodeError("malformed", "bad digest")
        return PushPullRequest(_node_id(value[2]), join, buckets, _records(value[5], max_records))
    if kind == Kind.PP_REPLY and len(value) == 4:
        differing = value[2]
        if differing is not None:
            if type(differing) is not list or len(differing) > 65536:
                raise DecodeError("malformed", "bad bucket list")
            differing = tuple(_uint(b, 65535) for b in differing)
        return PushPullReply(differing, _records(value[3], max_records))
    if kind == Kind.PP_PUSH and len(value) == 4:
        return PushPullPush(_node_id(value[2]), _records(value[3], max_records))
    if kind == Kind.PP_DONE and len(value) == 2:
        return PushPullDone()
    raise DecodeError("malformed", f"bad push-pull message of kind {kind}")
