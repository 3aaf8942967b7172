"""What crosses the usage writer process's socket, and a worker's end of it.

A frame is a 4-byte length and a JSON array of finished calls, each
``[call, outcome, ended]``: the :class:`CallRecord` and :class:`Outcome` as objects
keyed by field name (nested dataclasses such as the :class:`EndUserClaim` likewise),
datetimes as ISO strings. Both ends build the objects from the dataclasses' own
fields, so a field added to either class crosses the socket with no change here.

The writer process itself (tally/usage/writer/process.py) reads these frames; the
workers' :class:`RemoteSink` writes them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import socket
import struct
import time
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from tally.usage.call import CallRecord, Outcome

log = logging.getLogger(__name__)
FRAME = struct.Struct("!I")
ACK = b"\x06"  # the writer process's answer to a frame: committed or spooled
MAX_FRAME = 64 * 1024 * 1024

Item = tuple[CallRecord, Outcome, datetime]


def encode_batch(items: list[Item]) -> bytes:
    """A batch of finished calls as one frame.

    orjson writes the same JSON (dataclasses by field, naive datetimes as ISO text) at a
    tenth of the CPU, on the workers' hot path; what it refuses (an integer past 64
    bits, a lone surrogate from an upstream's answer) goes through the standard library,
    as every frame once did. Frames are read with the standard library: it reads both.
    """
    try:
        data = orjson.dumps(items)
    except TypeError:  # orjson.JSONEncodeError
        data = _stdlib_json(items)
    return FRAME.pack(len(data)) + data


def _stdlib_json(items: list[Item]) -> bytes:
    return json.dumps(
        [[call, outcome, ended] for call, outcome, ended in items],
        separators=(",", ":"),
        default=_encode,
        check_circular=False,  # rows are trees (JSON from the upstream): halves the cost
    ).encode()


def decode_batch(data: bytes) -> list[Item]:
    """The calls of one frame's payload (the length already taken off)."""
    return [
        (rebuild(CallRecord, call), rebuild(Outcome, outcome), datetime.fromisoformat(ended))
        for call, outcome, ended in json.loads(data)
    ]


def _encode(value: Any) -> Any:
    """What JSON cannot say itself: dataclasses by field name, datetimes in ISO form."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # The instance's attributes are its fields (anything else, the reader drops):
        # this is the workers' hot path, and vars() costs no Python loop per field.
        if hasattr(value, "__dict__"):
            return vars(value)
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # never fail a batch over one odd value: the row keeps its text


def rebuild(cls: type, values: dict[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from ``values`` keyed by field name.

    Fields the sender did not know take their defaults; names this side does not
    know are dropped (the two ends of one gunicorn run the same code, so neither
    happens but during an upgrade).
    """
    plan = _plan(cls)
    if values.keys() <= plan.names:
        kwargs = dict(values)
    else:
        kwargs = {name: value for name, value in values.items() if name in plan.names}
    for name, convert in plan.converters:
        value = kwargs.get(name)
        if value is not None:
            kwargs[name] = convert(value)
    if not plan.direct or len(kwargs) != len(plan.names):
        return cls(**kwargs)  # a field missing: the class's own defaults
    # Every field given, and nothing in __init__ but storing them: the instance's dict
    # is filled at once (the writer process rebuilds every row of every batch).
    instance = object.__new__(cls)
    instance.__dict__.update(kwargs)
    return instance


class _Plan(typing.NamedTuple):
    names: frozenset[str]  # the init fields
    converters: tuple[tuple[str, Callable[[Any], Any]], ...]  # JSON value -> field type
    direct: bool  # __init__ only stores the fields: an instance can be filled directly


@functools.cache
def _plan(cls: type) -> _Plan:
    """The init fields of ``cls``, those whose JSON value needs turning back into their
    type (datetimes, nested dataclasses, tuples) with what does it, and whether an
    instance may be made without calling ``__init__`` (no ``__post_init__``, no slots,
    no field outside ``__init__``)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [field.name for field in fields if field.init]
    converters = ((name, _converter(hints[name])) for name in names)
    direct = (
        not hasattr(cls, "__post_init__")
        and not hasattr(cls, "__slots__")
        and all(field.init for field in fields)
    )
    return _Plan(
        frozenset(names), tuple((name, c) for name, c in converters if c is not None), direct
    )


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    """None when JSON already gives the value back as it was (str, numbers, dicts…)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _converter(options[0]) if len(options) == 1 else None
    if hint is datetime:
        return datetime.fromisoformat
    if dataclasses.is_dataclass(hint):
        return functools.partial(rebuild, hint)
    if typing.get_origin(hint) is tuple or hint is tuple:
        return tuple
    return None


class RemoteSink:
    """A worker's connection to the writer process (under gevent, a cooperative one)."""

    RETRY_AFTER = 5.0  # seconds without trying again once the process could not be reached
    ACK_TIMEOUT = 60.0  # a batch waiting for a locked database (SQLite's busy timeout: 30 s)

    def __init__(self, path: str):
        self.path = path
        self._sock: socket.socket | None = None
        self._retry_at = 0.0

    def send(self, items: list[Item]) -> bool:
        """Hand ``items`` over and wait until they are committed or spooled; False when
        the writer process cannot take them (the caller then writes them itself, and a
        row the process did write meanwhile is skipped as a duplicate)."""
        if self._sock is None and time.monotonic() < self._retry_at:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(10)
                sock.connect(self.path)
                sock.settimeout(self.ACK_TIMEOUT)
                self._sock = sock
                if self._retry_at:
                    log.warning("usage writer process reachable again")
                    self._retry_at = 0.0
            self._sock.sendall(encode_batch(items))
            if self._sock.recv(1) != ACK:  # the process died before the batch was safe
                raise ConnectionResetError("usage writer process closed the connection")
            return True
        except OSError as exc:
            if not self._retry_at:
                log.error(
                    "usage writer process unreachable (%s); this worker writes its own rows", exc
                )
            self._retry_at = time.monotonic() + self.RETRY_AFTER
            self.close()
            return False

    def close(self) -> None:
        """Drop the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
