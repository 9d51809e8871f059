"""Frames on the wire: length-prefixed canonical CBOR, validated against the message schema.

A frame is a 4-byte big-endian payload length followed by the payload, the canonical CBOR of
``[PROTOCOL_VERSION, type_code, request_id, {field: value, ...}]``. Many requests share one
connection, so every reply carries the ``request_id`` of its request.

Two kinds of bad input are kept apart because they call for different reactions:

* a broken *stream* (length over ``Limits.max_frame``, undecodable CBOR, an envelope that is not
  ``[version, type, id, fields]``, an unknown protocol version, a bad request id) raises
  ``ProtocolError`` (``MessageTooLarge`` for size): the bytes can no longer be trusted to line
  up with frame boundaries or to come from a peer that speaks this protocol, so the caller
  closes the connection;
* a readable envelope around a bad *message* (unknown type, a field of the wrong type, missing
  or extra fields, a key or value over its limit) yields ``Decoded(request_id, None, reason)``:
  the caller answers that request with an ErrorReply and keeps the connection.

The schema is the field annotations of ``p2pindex.wire.messages``, turned into validators once
at import time. Size rules come from field names (documented in ``_BYTES_BOUNDS``):

* ``key`` and ``after`` (a resume key) use ``Limits.max_key``;
* ``value``, the ``values`` of a GetReply and ``context`` (an encoded version vector) use
  ``Limits.max_value``;
* ``record`` and the records in ``items`` hold every sibling of a key, which can legitimately
  outgrow one value, so they (and ``state``, a SWIM membership dump) are bounded only by
  ``Limits.max_frame``. The sibling limit itself is enforced where siblings are merged.
* lists (``items``, ``values``, ``members``) are bounded by the frame size;
* text: ``message``, ``detail`` and ``warning`` (prose) up to 64 KiB, any other string (ids,
  codes, addresses, consistency names) up to 4 KiB;
* integers: ``start`` and ``end`` are ring tokens (unsigned 64-bit); every other integer is a
  count or a duration, so it must lie in 0..2**63-1;
* ``consistency`` must be ``one``, ``quorum``, ``all`` (as ``consistency_to_wire`` sends them)
  or a positive integer.

Fields named in ``messages.UNSET_OMITTED`` (the request ``trace`` flag and the reply's
``trace`` document) are left out of a frame while unset, so frames that do not use them are
unchanged; when present they are validated like any other field, and a present false or
null is refused (no encoder sends one).

CBOR hazards and how they are closed: every tag is refused (tags decode to arbitrary Python
objects, and value sharing or string references could make a small frame expand into a huge
structure); indefinite-length items and duplicate map keys are refused; nesting is capped at
``_MAX_DEPTH`` so hostile depth becomes a CBORDecodeError, never a RecursionError; declared
lengths are never preallocated (cbor2 reads incrementally), so a short frame claiming a huge
array fails at its end. Integers must fit CBOR's native 64-bit range, because larger ones need
the bignum tag. What remains is ordinary object overhead: a frame made only of empty containers
decodes to roughly 70 times its size in Python objects, so ``max_frame`` is also the memory bound.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import io
import operator
import struct
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

import cbor2

from p2pindex.config import KIB, Limits
from p2pindex.core import strict_cbor
from p2pindex.errors import MessageTooLarge, ProtocolError
from p2pindex.types import ConsistencyLevel
from p2pindex.wire import messages
from p2pindex.wire.messages import PROTOCOL_VERSION, UNSET_OMITTED, Message

__all__ = [
    "MAX_REQUEST_ID",
    "MESSAGE_TYPES",
    "Decoded",
    "FrameDecoder",
    "decode_item",
    "encode_frame",
    "encode_item",
]

MAX_REQUEST_ID = 2**63 - 1
"""Request ids are unsigned and fit a signed 64-bit integer in any peer's language."""

_HEADER = struct.Struct(">I")
_HEADER_SIZE = _HEADER.size
_MAX_PAYLOAD = 2**32 - 1
_MAX_DEPTH = 64
"""Envelope, fields map and status documents fit easily; hostile depth does not."""

_SHORT_TEXT = 4 * KIB
_LONG_TEXT = 64 * KIB
_PROSE_FIELDS = frozenset({"message", "detail", "warning"})
_TOKEN_FIELDS = frozenset({"start", "end"})
_MAX_TOKEN = 2**64 - 1
_MAX_COUNT = 2**63 - 1
_CONSISTENCY_NAMES = tuple(level.value for level in ConsistencyLevel)


# --- message registry ------------------------------------------------------------------------


def _collect_message_types() -> dict[int, type[Message]]:
    registry: dict[int, type[Message]] = {}
    for obj in vars(messages).values():
        if not (isinstance(obj, type) and issubclass(obj, Message)) or obj is Message:
            continue
        if obj.TYPE in registry:
            other = registry[obj.TYPE].__name__
            raise TypeError(f"message type code {obj.TYPE} used by {other} and {obj.__name__}")
        if obj.TYPE <= 0:
            raise TypeError(f"{obj.__name__} has no positive TYPE code")
        registry[obj.TYPE] = obj
    return dict(sorted(registry.items()))


MESSAGE_TYPES: dict[int, type[Message]] = _collect_message_types()


# --- schema: annotations -> shapes (import time) ---------------------------------------------


class _Bound(enum.Enum):
    """Which ``Limits`` attribute bounds a byte string."""

    KEY = "max_key"
    VALUE = "max_value"
    FRAME = "max_frame"


_BYTES_BOUNDS: dict[str | tuple[str, int], _Bound] = {
    "key": _Bound.KEY,
    "after": _Bound.KEY,
    "value": _Bound.VALUE,
    "values": _Bound.VALUE,
    "context": _Bound.VALUE,
    "record": _Bound.FRAME,
    "state": _Bound.FRAME,
    "digests": _Bound.KEY,
    "keys": _Bound.KEY,
    ("items", 0): _Bound.KEY,
    ("items", 1): _Bound.FRAME,
}
"""Byte-string fields by name (or (name, position) inside a tuple); unnamed ones get FRAME."""


@dataclass(frozen=True, slots=True)
class _Bytes:
    bound: _Bound


@dataclass(frozen=True, slots=True)
class _Text:
    max_chars: int


@dataclass(frozen=True, slots=True)
class _Int:
    maximum: int


@dataclass(frozen=True, slots=True)
class _Bool:
    pass


@dataclass(frozen=True, slots=True)
class _Consistency:
    pass


@dataclass(frozen=True, slots=True)
class _Document:
    pass


@dataclass(frozen=True, slots=True)
class _Optional:
    inner: _Shape


@dataclass(frozen=True, slots=True)
class _List:
    item: _Shape


@dataclass(frozen=True, slots=True)
class _Tuple:
    items: tuple[_Shape, ...]


_Shape = _Bytes | _Text | _Int | _Bool | _Consistency | _Document | _Optional | _List | _Tuple

_MISSING = object()


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    shape: _Shape
    default: object
    kw_only: bool = False
    """Passed to the message's constructor by name (a keyword-only dataclass field)."""


def _shape_for(owner: str, where: str | tuple[str, int], annotation: object) -> _Shape:
    field = where if isinstance(where, str) else where[0]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if field == "consistency" and where == field:
        if set(args) != {str, int}:
            raise TypeError(f"{owner}.consistency must be annotated str | int")
        return _Consistency()
    if annotation is bytes:
        return _Bytes(_BYTES_BOUNDS.get(where, _Bound.FRAME))
    if annotation is str:
        return _Text(_LONG_TEXT if field in _PROSE_FIELDS else _SHORT_TEXT)
    if annotation is bool:
        return _Bool()
    if annotation is int:
        return _Int(_MAX_TOKEN if field in _TOKEN_FIELDS else _MAX_COUNT)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return _Optional(_shape_for(owner, where, rest[0]))
    if origin is list and len(args) == 1:
        return _List(_shape_for(owner, where, args[0]))
    if origin is tuple and args and Ellipsis not in args:
        return _Tuple(tuple(_shape_for(owner, (field, i), arg) for i, arg in enumerate(args)))
    if origin is dict and args == (str, typing.Any):
        return _Document()
    raise TypeError(f"{owner}.{field}: annotation {annotation!r} is not supported by the codec")


def _plan(cls: type[Message]) -> tuple[_FieldPlan, ...]:
    hints = typing.get_type_hints(cls)
    plans = []
    for field in dataclasses.fields(cls):
        if field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: default_factory is not supported")
        default = _MISSING if field.default is dataclasses.MISSING else field.default
        shape = _shape_for(cls.__name__, field.name, hints[field.name])
        plans.append(_FieldPlan(field.name, shape, default, field.kw_only is True))
    return tuple(plans)


_PLANS: dict[type[Message], tuple[_FieldPlan, ...]] = {
    cls: _plan(cls) for cls in MESSAGE_TYPES.values()
}


# --- encoding ---------------------------------------------------------------------------------


def _contains_document(shape: _Shape) -> bool:
    if isinstance(shape, _Document):
        return True
    if isinstance(shape, _Optional):
        return _contains_document(shape.inner)
    if isinstance(shape, _List):
        return _contains_document(shape.item)
    if isinstance(shape, _Tuple):
        return any(_contains_document(item) for item in shape.items)
    return False


@dataclass(frozen=True, slots=True)
class _Encoder:
    type_code: int
    names: tuple[str, ...]
    values: Callable[[Message], tuple[object, ...]]
    canonical: bool
    """Only messages holding free-form documents need cbor2's canonical mode (it sorts every
    nested map, a cost paid on every frame); the others are canonical by construction because
    their field names are pre-sorted in canonical order and every value is a byte string,
    text, integer, boolean, null or an array of these."""
    omitted: tuple[Callable[[Message], object], ...] = ()
    """For a message with fields of ``messages.UNSET_OMITTED``: a getter of each. While none
    is set, ``names`` (which leaves them out) makes the frame, so an unset field costs the
    hot path one attribute test; otherwise ``full`` does, without the unset ones."""
    full: _Encoder | None = None


def _canonical_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """Field names in the order canonical CBOR sorts map keys (decoding keeps that order)."""
    return tuple(cbor2.loads(cbor2.dumps(dict.fromkeys(names, 0), canonical=True)))


def _values_getter(names: tuple[str, ...]) -> Callable[[Message], tuple[object, ...]]:
    if not names:
        return lambda _message: ()
    if len(names) == 1:
        getter = operator.attrgetter(names[0])
        return lambda message: (getter(message),)
    return operator.attrgetter(*names)


def _make_encoder(cls: type[Message]) -> _Encoder:
    plans = _PLANS[cls]
    names = _canonical_order(tuple(plan.name for plan in plans))
    canonical = any(_contains_document(plan.shape) for plan in plans)
    full = _Encoder(cls.TYPE, names, _values_getter(names), canonical)
    omitted = [plan for plan in plans if plan.name in UNSET_OMITTED]
    if not omitted:
        return full
    for plan in omitted:
        if plan.default is not False and plan.default is not None:
            raise TypeError(
                f"{cls.__name__}.{plan.name} travels only when set, so it must default "
                "to False or None"
            )
    getters = tuple(operator.attrgetter(plan.name) for plan in omitted)
    base = tuple(name for name in names if name not in UNSET_OMITTED)
    base_canonical = any(
        _contains_document(plan.shape) for plan in plans if plan.name not in UNSET_OMITTED
    )
    return _Encoder(cls.TYPE, base, _values_getter(base), base_canonical, getters, full)


def _is_set(value: object) -> bool:
    return value is not None and value is not False


_ENCODERS: dict[type[Message], _Encoder] = {cls: _make_encoder(cls) for cls in _PLANS}


def _wire_fields(message: Message) -> tuple[_Encoder, dict[str, object]]:
    """The encoder and the ``{field: value}`` map that go on the wire for ``message``.

    The one place that decides which fields travel, for frames and batch items alike: every
    field, except those of ``messages.UNSET_OMITTED`` while unset.
    """
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"{type(message).__name__} is not a registered protocol message")
    for get in encoder.omitted:
        if _is_set(get(message)):
            full = encoder.full
            assert full is not None
            return full, {
                name: value
                for name, value in zip(full.names, full.values(message), strict=True)
                if name not in UNSET_OMITTED or _is_set(value)
            }
    return encoder, dict(zip(encoder.names, encoder.values(message), strict=True))


def encode_frame(message: Message, request_id: int, *, max_frame: int | None = None) -> bytes:
    """One complete frame for ``message``.

    The message is trusted (our own code built it); peers validate on decode. Pass
    ``max_frame`` (the peer's ``Limits.max_frame``) to get MessageTooLarge instead of a frame
    the peer would reject by closing the connection.
    """
    encoder, fields = _wire_fields(message)
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise ValueError(f"request id must be an integer in 0..2**63-1, not {request_id!r}")
    envelope = [PROTOCOL_VERSION, encoder.type_code, request_id, fields]
    payload = cbor2.dumps(envelope, canonical=encoder.canonical)
    limit = _MAX_PAYLOAD if max_frame is None else min(max_frame, _MAX_PAYLOAD)
    if len(payload) > limit:
        raise MessageTooLarge(
            f"{type(message).__name__} encodes to {len(payload)} bytes, "
            f"over the frame limit of {limit} bytes"
        )
    return _HEADER.pack(len(payload)) + payload


def encode_item(message: Message) -> bytes:
    """One message inside a batch: the canonical CBOR of ``[type_code, {field: value}]``,
    what a frame's envelope holds without its version and request id."""
    encoder, fields = _wire_fields(message)
    return cbor2.dumps([encoder.type_code, fields], canonical=encoder.canonical)


def decode_item(data: bytes, limits: Limits) -> Message:
    """Decode and validate one ``encode_item`` as strictly as a frame's message; raises
    ValueError saying what is wrong (the caller refuses that item alone)."""
    try:
        item = strict_cbor.loads(data, _MAX_DEPTH)
    except strict_cbor.MalformedCbor as exc:
        raise ValueError(f"not valid CBOR: {exc}") from None
    if type(item) is not list or len(item) != 2:
        raise ValueError(f"expected [type, fields], got {_describe_array(item)}")
    type_code, fields = item
    reader = _readers_for(limits).get(type_code) if type(type_code) is int else None
    if reader is None:
        raise ValueError(f"unknown message type {_short_repr(type_code)}")
    try:
        return reader(fields)
    except _Invalid as exc:
        raise ValueError(exc.reason) from None


# --- validation: shapes -> checks, bound to one Limits ----------------------------------------


class _Invalid(Exception):
    """A field failed validation; ``where`` is the path inside the field (e.g. ``[3][0]``)."""

    def __init__(self, reason: str, where: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where

    def inside(self, step: str) -> _Invalid:
        return _Invalid(self.reason, step + self.where)


_Check = Callable[[object], object]

_CBOR_KINDS: dict[type, str] = {
    bytes: "byte string",
    str: "text string",
    int: "integer",
    bool: "boolean",
    float: "float",
    list: "array",
    dict: "map",
    type(None): "null",
    type(cbor2.undefined): "undefined",
    cbor2.CBORSimpleValue: "simple value",
}


def _kind(value: object) -> str:
    return _CBOR_KINDS.get(type(value), type(value).__name__)


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bytes_check(limit: int, limit_name: str) -> _Check:
    def check(value: object) -> object:
        if type(value) is not bytes:
            raise _Invalid(f"expected a byte string, got {_kind(value)}")
        if len(value) > limit:
            raise _Invalid(f"{len(value)} bytes exceeds {limit_name} ({limit})")
        return value

    return check


def _text_check(limit: int) -> _Check:
    def check(value: object) -> object:
        if type(value) is not str:
            raise _Invalid(f"expected a text string, got {_kind(value)}")
        if len(value) > limit:
            raise _Invalid(f"{len(value)} characters exceeds the limit of {limit}")
        return value

    return check


def _int_check(maximum: int) -> _Check:
    def check(value: object) -> object:
        if type(value) is not int:
            raise _Invalid(f"expected an integer, got {_kind(value)}")
        if not 0 <= value <= maximum:
            raise _Invalid(f"{value} is outside 0..{maximum}")
        return value

    return check


def _bool_check(value: object) -> object:
    if type(value) is not bool:
        raise _Invalid(f"expected a boolean, got {_kind(value)}")
    return value


def _consistency_check(value: object) -> object:
    """Exactly what ``consistency_to_wire`` sends: a level's lowercase name or a count."""
    if type(value) is str:
        if value in _CONSISTENCY_NAMES:
            return value
        raise _Invalid(f"{_short_repr(value)} is not one of {', '.join(_CONSISTENCY_NAMES)}")
    if type(value) is int:
        if 1 <= value <= _MAX_COUNT:
            return value
        raise _Invalid(f"{value} is outside 1..{_MAX_COUNT}")
    raise _Invalid(f"expected a consistency name or integer, got {_kind(value)}")


_DOCUMENT_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _check_document_value(value: object) -> None:
    if isinstance(value, dict):
        _check_document_map(value)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check_document_value(item)
            except _Invalid as exc:
                raise exc.inside(f"[{index}]") from None
    elif type(value) not in _DOCUMENT_SCALARS:
        raise _Invalid(f"{_kind(value)} is not allowed in a document")


def _check_document_map(document: dict[object, object]) -> None:
    for key, item in document.items():
        if type(key) is not str:
            raise _Invalid(f"map keys must be text strings, got {_kind(key)}")
        try:
            _check_document_value(item)
        except _Invalid as exc:
            raise exc.inside(f"[{_short_repr(key)}]") from None


def _document_check(value: object) -> object:
    """Documents (status, explain, members) are shown to people and dumped as JSON, so they
    may hold only plain data: no undefined, no simple values, text keys everywhere."""
    if type(value) is not dict:
        raise _Invalid(f"expected a map, got {_kind(value)}")
    _check_document_map(value)
    return value


def _optional_check(inner: _Check) -> _Check:
    def check(value: object) -> object:
        return None if value is None else inner(value)

    return check


def _list_check(item_check: _Check, converts: bool) -> _Check:
    def check(value: object) -> object:
        if type(value) is not list:
            raise _Invalid(f"expected an array, got {_kind(value)}")
        out = [] if converts else value
        for index, item in enumerate(value):
            try:
                checked = item_check(item)
            except _Invalid as exc:
                raise exc.inside(f"[{index}]") from None
            if converts:
                out.append(checked)
        return out

    return check


def _tuple_check(item_checks: tuple[_Check, ...]) -> _Check:
    size = len(item_checks)

    def check(value: object) -> object:
        if type(value) is not list or len(value) != size:
            raise _Invalid(f"expected an array of {size}, got {_describe_array(value)}")
        out = []
        for index, (item_check, item) in enumerate(zip(item_checks, value, strict=True)):
            try:
                out.append(item_check(item))
            except _Invalid as exc:
                raise exc.inside(f"[{index}]") from None
        return tuple(out)

    return check


def _describe_array(value: object) -> str:
    return f"an array of {len(value)}" if type(value) is list else _kind(value)  # type: ignore[arg-type]


def _converts(shape: _Shape) -> bool:
    """Whether checking a value builds a new one (CBOR arrays become tuples)."""
    if isinstance(shape, _Tuple):
        return True
    if isinstance(shape, _Optional):
        return _converts(shape.inner)
    if isinstance(shape, _List):
        return _converts(shape.item)
    return False


def _build_check(shape: _Shape, limits: Limits) -> _Check:
    if isinstance(shape, _Bytes):
        return _bytes_check(getattr(limits, shape.bound.value), shape.bound.value)
    if isinstance(shape, _Text):
        return _text_check(shape.max_chars)
    if isinstance(shape, _Int):
        return _int_check(shape.maximum)
    if isinstance(shape, _Bool):
        return _bool_check
    if isinstance(shape, _Consistency):
        return _consistency_check
    if isinstance(shape, _Document):
        return _document_check
    if isinstance(shape, _Optional):
        return _optional_check(_build_check(shape.inner, limits))
    if isinstance(shape, _List):
        return _list_check(_build_check(shape.item, limits), _converts(shape.item))
    return _tuple_check(tuple(_build_check(item, limits) for item in shape.items))


_Reader = Callable[[object], Message]


def _fast_test(shape: _Shape, var: str, limits: Limits) -> str | None:
    """A Python expression true when ``var`` is valid for ``shape`` as it stands.

    Only shapes whose valid values pass through unchanged get one; the others (lists,
    tuples, documents) always go through their check.
    """
    if isinstance(shape, _Bytes):
        return f"type({var}) is bytes and len({var}) <= {getattr(limits, shape.bound.value)}"
    if isinstance(shape, _Text):
        return f"type({var}) is str and len({var}) <= {shape.max_chars}"
    if isinstance(shape, _Int):
        return f"type({var}) is int and 0 <= {var} <= {shape.maximum}"
    if isinstance(shape, _Bool):
        return f"type({var}) is bool"
    if isinstance(shape, _Consistency):
        return f"{var} in _CONSISTENCY_NAMES or (type({var}) is int and 1 <= {var} <= {_MAX_COUNT})"
    if isinstance(shape, _Optional):
        inner = _fast_test(shape.inner, var, limits)
        return None if inner is None else f"{var} is None or ({inner})"
    return None


def _not_a_map(name: str, fields: object) -> typing.NoReturn:
    raise _Invalid(f"{name}: fields must be a map, got {_kind(fields)}")


def _missing(name: str, field: str) -> typing.NoReturn:
    raise _Invalid(f"{name}: missing field {field!r}")


def _unexpected(name: str, fields: dict[object, object], known: frozenset[str]) -> typing.NoReturn:
    extra = sorted(_short_repr(key) for key in fields if key not in known)
    raise _Invalid(f"{name}: unexpected field(s) {', '.join(extra[:5])}")


def _sent_unset(name: str, field: str) -> typing.NoReturn:
    raise _Invalid(f"{name}.{field}: travels only when set, never as false or null")


def _checked(name: str, field: str, check: _Check, value: object) -> object:
    try:
        return check(value)
    except _Invalid as exc:
        raise _Invalid(f"{name}.{field}{exc.where}: {exc.reason}") from None


def _build_reader(cls: type[Message], limits: Limits) -> _Reader:
    """Compile one function that reads and validates the fields map of ``cls``.

    Generated like ``dataclasses`` generates ``__init__``: straight-line code with the type
    and size tests inlined is faster than a loop of checker calls, and this runs for every
    frame. Any value failing its inline test goes through the
    full check, which either converts it (arrays to tuples) or raises with a precise reason.
    """
    name = cls.__name__
    plans = _PLANS[cls]
    namespace: dict[str, object] = {
        "_MISSING": _MISSING,
        "_CONSISTENCY_NAMES": _CONSISTENCY_NAMES,
        "_not_a_map": _not_a_map,
        "_missing": _missing,
        "_unexpected": _unexpected,
        "_sent_unset": _sent_unset,
        "_checked": _checked,
        "cls": cls,
        "known": frozenset(plan.name for plan in plans),
    }
    lines = [
        "def read(fields):",
        "    if type(fields) is not dict:",
        f"        _not_a_map({name!r}, fields)",
        "    get = fields.get",
        "    present = 0",
    ]
    for index, plan in enumerate(plans):
        var = f"v{index}"
        namespace[f"check{index}"] = _build_check(plan.shape, limits)
        namespace[f"default{index}"] = plan.default
        if plan.default is _MISSING:
            absent = f"_missing({name!r}, {plan.name!r})"
        else:
            absent = f"{var} = default{index}"
        slow = f"{var} = _checked({name!r}, {plan.name!r}, check{index}, {var})"
        fast = _fast_test(plan.shape, var, limits)
        lines += [
            f"    {var} = get({plan.name!r}, _MISSING)",
            f"    if {var} is _MISSING:",
            f"        {absent}",
            "    else:",
            "        present += 1",
        ]
        if plan.name in UNSET_OMITTED:
            lines += [
                f"        if {var} is False or {var} is None:",
                f"            _sent_unset({name!r}, {plan.name!r})",
            ]
        if fast is None:
            lines.append(f"        {slow}")
        else:
            lines += [f"        if not ({fast}):", f"            {slow}"]
    args = ", ".join(
        [f"v{index}" for index, plan in enumerate(plans) if not plan.kw_only]
        + [f"{plan.name}=v{index}" for index, plan in enumerate(plans) if plan.kw_only]
    )
    lines += [
        "    if present != len(fields):",
        f"        _unexpected({name!r}, fields, known)",
        f"    return cls({args})",
    ]
    exec("\n".join(lines), namespace)
    return typing.cast(_Reader, namespace["read"])


@functools.lru_cache(maxsize=16)
def _readers_for(limits: Limits) -> dict[int, _Reader]:
    return {code: _build_reader(cls, limits) for code, cls in MESSAGE_TYPES.items()}


# --- decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decoded:
    """One frame: a valid ``message``, or an ``error`` to answer for ``request_id``."""

    request_id: int
    message: Message | None
    error: str | None


class FrameDecoder:
    """Turns a byte stream into ``Decoded`` frames (sans-IO: feed it what the socket read).

    After it raises ProtocolError the stream is out of step, so every later call raises too.
    """

    def __init__(self, limits: Limits) -> None:
        self._max_frame = limits.max_frame
        self._readers = _readers_for(limits)
        self._buffer = bytearray()
        self._failure: ProtocolError | None = None
        self._cbor = strict_cbor.decoder(io.BytesIO(b""), _MAX_DEPTH)

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that has not fully arrived."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> list[Decoded]:
        """Every frame completed by ``data``; raises ProtocolError if the stream is broken.

        Frames that preceded the broken one in the same ``data`` are dropped with it: the
        caller is closing the connection, so their requests fail like any other in flight.
        """
        if self._failure is not None:
            raise ProtocolError(f"stream already failed: {self._failure}")
        try:
            return self._feed(data)
        except ProtocolError as exc:
            self._failure = exc
            self._buffer = bytearray()
            raise

    def eof(self) -> None:
        """The peer closed the stream: raises ProtocolError if it stopped inside a frame."""
        if self._failure is not None:
            raise ProtocolError(f"stream already failed: {self._failure}")
        held = len(self._buffer)
        if held == 0:
            return
        if held < _HEADER_SIZE:
            raise ProtocolError(f"truncated frame: {held} of {_HEADER_SIZE} header bytes")
        (length,) = _HEADER.unpack_from(self._buffer)
        raise ProtocolError(f"truncated frame: {held} of {_HEADER_SIZE + length} bytes")

    def _feed(self, data: bytes | bytearray) -> list[Decoded]:
        if self._buffer:
            self._buffer += data
            if not self._frame_complete():
                return []
            region = bytes(self._buffer)
        else:
            region = bytes(data)
        frames: list[Decoded] = []
        stream = io.BytesIO(region)
        self._cbor.fp = stream
        decode = self._cbor.decode
        unpack_from = _HEADER.unpack_from
        max_frame = self._max_frame
        position = 0
        size = len(region)
        while size - position >= _HEADER_SIZE:
            (length,) = unpack_from(region, position)
            if length > max_frame:
                raise _too_large(length, max_frame)
            start = position + _HEADER_SIZE
            end = start + length
            if end > size:
                break
            stream.seek(start)
            try:
                envelope = decode()
            except cbor2.CBORDecodeError as exc:
                raise ProtocolError(f"frame payload is not valid CBOR: {_cause(exc)}") from None
            if stream.tell() != end:
                raise ProtocolError(
                    f"frame payload of {length} bytes holds a CBOR item of "
                    f"{stream.tell() - start} bytes"
                )
            frames.append(self._open(envelope))
            position = end
        self._buffer = bytearray(memoryview(region)[position:])
        return frames

    def _frame_complete(self) -> bool:
        """Whether the buffer holds at least one whole frame (checks its size on the way)."""
        if len(self._buffer) < _HEADER_SIZE:
            return False
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > self._max_frame:
            raise _too_large(length, self._max_frame)
        return len(self._buffer) >= _HEADER_SIZE + length

    def _open(self, envelope: object) -> Decoded:
        if type(envelope) is not list or len(envelope) != 4:
            raise ProtocolError(
                f"frame envelope must be [version, type, request_id, fields], "
                f"got {_describe_array(envelope)}"
            )
        version, type_code, request_id, fields = envelope
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {_short_repr(version)} "
                f"(this node speaks {PROTOCOL_VERSION})"
            )
        if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
            raise ProtocolError(
                f"request id must be an integer in 0..2**63-1, got {_short_repr(request_id)}"
            )
        reader = self._readers.get(type_code) if type(type_code) is int else None
        if reader is None:
            return Decoded(request_id, None, f"unknown message type {_short_repr(type_code)}")
        try:
            return Decoded(request_id, reader(fields), None)
        except _Invalid as exc:
            return Decoded(request_id, None, exc.reason)


def _too_large(length: int, max_frame: int) -> MessageTooLarge:
    return MessageTooLarge(f"frame of {length} bytes exceeds max_frame ({max_frame} bytes)")


def _cause(exc: cbor2.CBORDecodeError) -> str:
    """cbor2 wraps our tag refusals; surface the inner reason, which names the tag."""
    cause = exc.__cause__ or exc.__context__
    return f"{exc}: {cause}" if isinstance(cause, ValueError) else str(exc)
