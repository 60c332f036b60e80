"""Event sequences: a dict whose every change is kept as an event, replayable to any time.

Each `apply` appends its events and the new state in one `Backend.apply` that only
succeeds if nobody appended meanwhile (else it re-reads and retries), so concurrent
writers never lose an event and every reader sees one order: ``seq``. Timestamps are
milliseconds and never go back along ``seq`` (two events in one millisecond keep their
order by ``seq``). Operations are stored by name, never as code.

A sequence is records in the scope's event scope (``kind_scope(scope, "e")``, which no
user can name), under ``{id} = name_key(name)``, which a Redis Cluster keeps in one slot:

- ``{id}``: the head, msgpack of [name, generation, last seq, its timestamp, state,
  tail]: the tail is the latest events, [[timestamp, data], ...], up to PAGE_EVENTS;
- ``{id}/<generation>/<seq:016d>``: a page, [[[timestamp, data], ...]]: the events whose
  last is seq, moved out of the tail in the append that filled it (pages sort by seq);
- ``{id}/base``: the base, [generation, seq, timestamp, state]: the state after every
  event up to seq, whose pages `compact` drops.

So an append rewrites one record (two when a page fills), and a replay reads a page per
64 events. States and events are sealed like values, each under its own name (see
`_seal_name`). The generation (random, per life of the sequence) keeps apart the pages of
a deleted sequence, which `delete` frees after the head, from those of one begun again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import time
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from ._backends.base import Backend, Delete, Expect, Put, Record
from ._errors import CorruptData, InvalidInput, InvalidInputType, SatchelError, ValueChanged
from ._event_ops import parse_change, replay
from ._keys import check_key, head_keys, kind_scope, name_key

if TYPE_CHECKING:
    from ._core import Core

PAGE = 100  # pages per round trip when replaying
KIND = "e"
# The head's tail of events goes into a page of its own once it holds this many events
# or bytes: an append rewrites the head (its tail included), a replay reads pages.
PAGE_EVENTS, PAGE_BYTES = 64, 64 * 1024


class Event(NamedTuple):
    """One recorded change: at `timestamp_ms`, `op` applied to `item` with `value`."""

    timestamp_ms: int
    seq: int
    item: Any
    op: str
    value: Any


def _check_ms(
    value: object, what: str, guard: Callable[[SatchelError], SatchelError], optional: bool = True
) -> None:
    if (value is None and optional) or type(value) is int:
        return
    raise guard(InvalidInputType(f"{what} must be an int (ms){' or None' * optional}, "
                                 f"not {value!r}"))  # fmt: skip


class _Head(NamedTuple):
    record: Record
    generation: str
    seq: int
    ts: int
    state: bytes
    tail: list[list[Any]]  # [timestamp, data] of the events after the last page

    @property
    def flushed(self) -> int:
        """The seq of the last event in a page (the tail follows)."""
        return self.seq - len(self.tail)


def _unpack(data: bytes, shape: tuple[type, ...], what: str) -> list[Any]:
    """The fields of a stored head, base or event. Raises CorruptData unless they are
    `shape` (exact types: a bool is not an int)."""
    try:
        fields = msgpack.unpackb(data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptData(f"the {what} of an event sequence is damaged: {exc}") from exc
    if (
        not isinstance(fields, list)
        or len(fields) != len(shape)
        or any(type(f) is not t for f, t in zip(fields, shape, strict=True))
    ):
        raise CorruptData(f"the {what} of an event sequence is damaged")
    return fields


HEAD_SHAPE = (str, str, int, int, bytes, list)


def _entries(value: Any, what: str) -> list[list[Any]]:
    """`value` if it is a list of [timestamp, data] events, else CorruptData."""
    if not isinstance(value, list) or not all(
        type(e) is list and len(e) == 2 and type(e[0]) is int and type(e[1]) is bytes
        for e in value
    ):
        raise CorruptData(f"the {what} of an event sequence is damaged")
    return value


def _last_of(page_key: str) -> int:
    """The seq of the last event of the page stored under `page_key`."""
    digits = page_key[-16:]
    if not (digits.isascii() and digits.isdigit()):
        raise CorruptData(f"an event sequence holds a page under {page_key!r}")
    return int(digits)


def _page_key(head_key: str, generation: str, last: int) -> str:
    """The key of the page of `generation` whose last event is `last` (pages sort by it)."""
    return f"{head_key}/{generation}/{last:016d}"


def names(backend: Backend, scope: str) -> list[str]:
    """Sorted names of the event sequences of `scope`."""
    events_scope = kind_scope(scope, KIND)
    found = backend.get_many(events_scope, head_keys(backend, events_scope), time())
    return sorted(_unpack(r.value, HEAD_SHAPE, "head")[0] for r in found.values())


class Events:
    """An event sequence: a dict whose changes are all recorded. Get one with
    ``store.events(name)``.

    >>> cart = store.events("cart:42")
    >>> cart.apply({"apples": ("add", 3), "note": "gift"})
    {'apples': 3, 'note': 'gift'}
    >>> cart.apply({"apples": ("sub", 1), "note": ("delete",)})
    {'apples': 2}
    """

    __slots__ = ("_core", "_head_key", "_known", "_name", "_scope")

    def __init__(self, core: Core, name: str) -> None:
        self._core = core
        self._name = check_key(name)
        self._scope = kind_scope(core.scope, KIND)
        self._head_key = name_key(self._name)
        self._known: _Head | None = None  # the head this object wrote last

    @property
    def name(self) -> str:
        """The sequence's name."""
        return self._name

    def _guard(self, exc: SatchelError) -> SatchelError:
        return self._core.tag(exc, self._name)

    def _seal_name(self, tag: str) -> str:
        return f"{self._name}\x00{tag}"  # no key holds a NUL: never a record's name

    def _dump(self, value: Any, tag: str) -> bytes:
        core = self._core
        return core.seal(core.encode(value), self._seal_name(tag))

    def _load(self, data: bytes, tag: str) -> Any:
        return self._core.load_small(data, self._seal_name(tag))

    def _head(self) -> _Head | None:
        record = self._core.backend.get(self._scope, self._head_key, time())
        if record is None:
            return None
        name, generation, seq, ts, state, tail = _unpack(record.value, HEAD_SHAPE, "head")
        if name != self._name or len(tail) > seq:  # the tail's events: checked when used
            raise CorruptData("the head of the event sequence is damaged")
        return _Head(record, generation, seq, ts, state, tail)

    def _base(self, head: _Head | None) -> tuple[Record | None, int, int, dict[Any, Any]]:
        """The base record (any generation) and the base state of `head`'s generation."""
        if head is None:
            return None, 0, 0, {}
        record = self._core.backend.get(self._scope, f"{self._head_key}/base", time())
        if record is None:
            return None, 0, 0, {}
        generation, seq, ts, state = _unpack(record.value, (str, int, int, bytes), "base")
        if generation != head.generation:  # left by a compaction of a deleted sequence
            return record, 0, 0, {}
        return record, seq, ts, self._load(state, f"base{seq}@{ts}")

    def _state(self, head: _Head | None) -> tuple[int, int, dict[Any, Any]]:
        if head is None:
            return 0, 0, {}
        return head.seq, head.ts, self._load(head.state, f"head{head.seq}@{head.ts}")

    def _pages(self, head: _Head, after_seq: int, values: bool = True) -> Iterator[list[Record]]:
        """The page records of `head`'s generation holding events after `after_seq` (and
        maybe some before, in the first), PAGE of them at a time."""
        backend, prefix = self._core.backend, f"{self._head_key}/{head.generation}/"
        after = _page_key(self._head_key, head.generation, after_seq)
        while page := backend.scan(self._scope, prefix, after, PAGE, time(), values=values):
            yield page
            if len(page) < PAGE:
                return
            after = page[-1].key

    def _stored(self, head: _Head | None, after_seq: int) -> Iterator[tuple[int, int, bytes]]:
        """(seq, timestamp, data) of each event after `after_seq` up to `head`'s last, as
        `head` saw them: from the pages up to its tail, then from its tail."""
        if head is None:
            return
        expected, flushed = after_seq + 1, head.flushed
        if expected <= flushed:
            for page in self._pages(head, after_seq):
                for record in page:
                    entries = _entries(_unpack(record.value, (list,), "page")[0], "page")
                    first = _last_of(record.key) - len(entries) + 1
                    if first > expected:
                        raise self._gap(head, expected)
                    for seq, (ts, data) in enumerate(entries, first):
                        if seq > flushed:  # written after `head`: its tail has them
                            break
                        if seq == expected:
                            yield seq, ts, data
                            expected += 1
                    if expected > flushed:
                        break
                if expected > flushed:
                    break
            if expected <= flushed:
                raise self._gap(head, expected)
        for seq, (ts, data) in enumerate(_entries(head.tail, "head"), flushed + 1):
            if seq >= expected:
                yield seq, ts, data

    def _events(self, head: _Head | None, after_seq: int) -> Iterator[Event]:
        for seq, ts, data in self._stored(head, after_seq):
            item, op, value = self._load(data, f"e{seq}@{ts}")
            yield Event(ts, seq, item, op, value)

    def _gap(self, head: _Head, missing: int) -> SatchelError:
        """ValueChanged if event `missing` was compacted or deleted meanwhile (callers read
        again), else CorruptData: a record was lost, and reading again would not help."""
        now = self._head()
        base = self._core.backend.get(self._scope, f"{self._head_key}/base", time())
        generation, seq = ("", 0) if base is None else _unpack(
            base.value, (str, int, int, bytes), "base")[:2]  # fmt: skip
        if now is None or now.generation != head.generation or (
            generation == head.generation and seq >= missing
        ):
            return ValueChanged("the event sequence changed while it was read")
        return CorruptData(f"event {missing} of the sequence is missing")

    def apply(self, changes: Mapping[Any, Any]) -> dict[Any, Any]:
        """Record the changes atomically and return the new state.

        Each value of `changes` is a new value for its item, or an op: ``("add", 1)``,
        ``("sub", n)``, ``("mul", n)``, ``("max", v)``, ``("min", v)``, ``("append", v)``,
        ``("extend", [..])``, ``("union", {..})``, ``("difference", {..})``,
        ``("merge", {..})``, ``("delete",)``, ``("set", v)`` (needed to store a tuple).
        A missing item counts as 0, an empty list, set or dict. An unknown op or a type
        mismatch raises InvalidInput (a ValueError) and records nothing.
        """
        core = self._core
        try:
            if not isinstance(changes, Mapping):
                raise InvalidInput(f"changes must be a mapping, not {type(changes).__name__}")
            parsed = [(item, *parse_change(change)) for item, change in changes.items()]
            if core.codec.name == "json" and any(type(i) is not str for i, *_ in parsed):
                raise InvalidInput("with the json codec, items must be str (JSON object keys)")
            # The head this object wrote last saves a read while nobody else appends; if
            # someone did, the append's condition fails and the head is read.
            head, known = self._known, self._known is not None
            while True:
                if not known:
                    head = self._head()
                known = False
                state = self._state(head)[2]
                for item, op, value in parsed:
                    replay(state, item, op, value)
                if not parsed:
                    return state
                if self._append(head, parsed, state):
                    return state
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def _append(self, head: _Head | None, parsed: Sequence[tuple[Any, str, Any]],
                state: dict[Any, Any]) -> bool:  # fmt: skip
        """Write the events and the new head unless the head moved on from `head`; note
        the new head (a put over a live record keeps created_at and adds 1 to version)."""
        if head is None:
            seq, ts, generation, tail = 0, 0, uuid.uuid4().hex[:16], []
            expect = Expect(self._head_key, None)
        else:
            seq, ts, generation = head.seq, head.ts, head.generation
            tail = _entries(head.tail, "head")
            expect = Expect(self._head_key, head.record.version, head.record.created_at)
        now = max(int(time() * 1000), ts)
        tail = tail + [[now, self._dump([item, op, value], f"e{seq + i}@{now}")]
                       for i, (item, op, value) in enumerate(parsed, 1)]  # fmt: skip
        last = seq + len(parsed)
        changes = []
        if len(tail) >= PAGE_EVENTS or sum(len(data) for _, data in tail) >= PAGE_BYTES:
            changes.append(Put(_page_key(self._head_key, generation, last), msgpack.packb([tail])))
            tail = []
        sealed = self._dump(state, f"head{last}@{now}")
        value = msgpack.packb([self._name, generation, last, now, sealed, tail])
        changes.append(Put(self._head_key, value))
        self._known = None
        if self._core.backend.apply(self._scope, changes, time(), (expect,)) is None:
            return False
        if head is not None:  # a new head's created_at is the engine's: read it next time
            old = head.record
            record = Record(old.key, value, old.created_at, old.created_at, None, old.version + 1)
            self._known = _Head(record, generation, last, now, sealed, tail)
        return True

    def current(self) -> dict[Any, Any]:
        """The state after every event ({} for a new sequence)."""
        try:
            return self._state(self._head())[2]
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def at(self, timestamp_ms: int) -> dict[Any, Any]:
        """The state as it was at `timestamp_ms` (every event up to and including it).

        Raises InvalidInput if that time lies before the last `compact`.
        """
        _check_ms(timestamp_ms, "timestamp_ms", self._guard, optional=False)
        try:
            while True:
                head = self._head()
                _, seq, ts, state = self._base(head)
                if seq and timestamp_ms < ts:
                    raise InvalidInput(f"events before {ts} ms were compacted; at() starts there")
                try:
                    for event in self._events(head, seq):
                        if event.timestamp_ms > timestamp_ms:
                            break
                        replay(state, event.item, event.op, event.value)
                except ValueChanged:
                    continue  # compacted meanwhile: start again from the new base
                return state
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def history(self, start: int | None = None, stop: int | None = None) -> Iterator[Event]:
        """Lazily yield the recorded events with ``start <= timestamp_ms < stop``, by seq
        (events folded by `compact` are gone)."""
        _check_ms(start, "start", self._guard)
        _check_ms(stop, "stop", self._guard)
        return self._history(start, stop)

    def _history(self, start: int | None, stop: int | None) -> Iterator[Event]:
        try:
            head = self._head()
            for event in self._events(head, self._base(head)[1]):
                if stop is not None and event.timestamp_ms >= stop:
                    return
                if start is None or event.timestamp_ms >= start:
                    yield event
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def compact(self, before: int | None = None) -> int:
        """Fold the events older than `before` ms (None: all) into a snapshot; return how
        many were folded. `current()` and `at()` from the snapshot on are unchanged."""
        _check_ms(before, "before", self._guard)
        try:
            while True:
                head = self._head()
                record, seq, ts, state = self._base(head)
                folded = 0
                try:
                    for event in self._events(head, seq):
                        if before is not None and event.timestamp_ms >= before:
                            break
                        replay(state, event.item, event.op, event.value)
                        seq, ts, folded = event.seq, event.timestamp_ms, folded + 1
                except ValueChanged:
                    continue  # compacted by someone else meanwhile: fold from there
                if not folded or head is None:
                    return 0
                base = [head.generation, seq, ts, self._dump(state, f"base{seq}@{ts}")]
                change = Put(f"{self._head_key}/base", msgpack.packb(base))
                expect = Expect(change.key, None) if record is None else Expect(
                    change.key, record.version, record.created_at)  # fmt: skip
                if self._core.backend.apply(self._scope, (change,), time(), (expect,)) is None:
                    continue  # compacted by someone else meanwhile: fold from there
                self._drop_events(head, seq)
                self._trim(head, seq)
                return folded
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def _drop_events(self, head: _Head, through: int | None) -> None:
        """Delete the events of `head`'s generation up to seq `through` (None: all)."""
        backend = self._core.backend
        for page in self._pages(head, 0, values=False):
            doomed = [Delete(r.key) for r in page if through is None or _last_of(r.key) <= through]
            if doomed:
                backend.apply(self._scope, doomed, time())
            if len(doomed) < len(page):
                return

    def _trim(self, head: _Head | None, through: int) -> None:
        """Drop the events up to seq `through` from the tail of the head (of `head`'s
        generation), retrying while appends move the head on."""
        self._known = None
        generation = None if head is None else head.generation
        while head is not None and head.generation == generation and head.flushed < through:
            tail = head.tail[through - head.flushed :]
            fields = [self._name, head.generation, head.seq, head.ts, head.state, tail]
            if self._replace(head.record, msgpack.packb(fields)):
                return
            head = self._head()

    def _reseal(self, reseal: Callable[[bytes, str], bytes | None]) -> tuple[int, int]:
        """Rewrite each event, then the states, as ``reseal(data, seal name)`` gives them
        (None: left as it is), unless they changed meanwhile; return (checked, rewritten),
        counting events and states."""
        checked = rewritten = 0

        def resealed(entries: list[list[Any]], first: int) -> int:
            """Reseal `entries` (events from seq `first`) in place; how many changed."""
            changed = 0
            for seq, entry in enumerate(entries, first):
                if new := reseal(entry[1], self._seal_name(f"e{seq}@{entry[0]}")):
                    entry[1], changed = new, changed + 1
            return changed

        try:
            head = self._head()
            if head is None:
                return 0, 0
            for page in self._pages(head, 0):
                counted: list[tuple[Record, bytes, int]] = []
                for record in page:
                    entries = _entries(_unpack(record.value, (list,), "page")[0], "page")
                    checked += len(entries)
                    first = _last_of(record.key) - len(entries) + 1
                    if changed := resealed(entries, first):
                        counted.append((record, msgpack.packb([entries]), changed))
                done = self._replace_all([(record, value) for record, value, _ in counted])
                rewritten += sum(n for *_, n in counted) if done == len(counted) else done
            base = self._core.backend.get(self._scope, f"{self._head_key}/base", time())
            if base is not None:
                checked += 1
                generation, seq, ts, data = _unpack(base.value, (str, int, int, bytes), "base")
                if new := reseal(data, self._seal_name(f"base{seq}@{ts}")):
                    rewritten += self._replace(base, msgpack.packb([generation, seq, ts, new]))
            while head is not None:  # the head moves on with every append: retry
                checked += 1 + len(head.tail)
                changed = resealed(_entries(head.tail, "head"), head.flushed + 1)
                new = reseal(head.state, self._seal_name(f"head{head.seq}@{head.ts}"))
                if not new and not changed:
                    break
                fields = [self._name, head.generation, head.seq, head.ts, new or head.state,
                          head.tail]  # fmt: skip
                if self._replace(head.record, msgpack.packb(fields)):
                    rewritten += changed + bool(new)
                    break
                head = self._head()
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__
        return checked, rewritten

    def _replace(self, record: Record, value: bytes) -> bool:
        """Set `record`'s value unless it changed meanwhile."""
        return self._replace_all([(record, value)]) == 1

    def _replace_all(self, changed: Sequence[tuple[Record, bytes]]) -> int:
        """Set each record's value unless it changed meanwhile; return how many were set.
        One batch, or one record at a time once a batch finds a record changed."""
        if not changed:
            return 0
        changes = [Put(record.key, value) for record, value in changed]
        expect = [Expect(r.key, r.version, r.created_at) for r, _ in changed]
        if self._core.backend.apply(self._scope, changes, time(), expect) is not None:
            return len(changed)
        if len(changed) == 1:
            return 0
        return sum(self._replace_all([pair]) for pair in changed)

    def delete(self) -> bool:
        """Delete the sequence, events and snapshots; False if it did not exist."""
        self._known = None
        try:
            while (head := self._head()) is not None:
                gone = (Delete(self._head_key), Delete(f"{self._head_key}/base"))
                expect = Expect(self._head_key, head.record.version, head.record.created_at)
                if self._core.backend.apply(self._scope, gone, time(), (expect,)) is not None:
                    self._drop_events(head, None)
                    return True
            return False
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __len__(self) -> int:
        """How many events are recorded (including those folded by `compact`)."""
        try:
            head = self._head()
            return 0 if head is None else head.seq
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __repr__(self) -> str:
        return f"<satchel.Events {self._name!r} scope={self._core.scope!r}>"


MIGRATED = "0" * 16  # the generation of a copied sequence: a copy run again overwrites it


def migrate(backend: Backend) -> int:
    """Copy the event sequences kept the way releases before 0.2 kept them into records,
    then drop that old storage; return how many were copied. A sequence whose head is a
    record already is left alone (the head is written last, once its events are in).
    Safe to run from several processes at once."""
    found = backend.legacy_sequences()
    if found is None:
        return 0
    moved = 0
    for scope, name in found:
        events_scope, head_key = kind_scope(scope, KIND), name_key(name)
        if backend.get(events_scope, head_key, time()) is not None:
            continue
        head, base = backend.legacy_states(scope, name)
        if head is None:
            continue
        after = 0 if base is None else base[0]
        while page := backend.legacy_events(scope, name, after, PAGE_EVENTS):
            last, entries = page[-1][0], [[ts, data] for _, ts, data in page]
            page_key = _page_key(head_key, MIGRATED, last)
            backend.apply(events_scope, [Put(page_key, msgpack.packb([entries]))], time())
            after = last
        states = [] if base is None else [Put(f"{head_key}/base",
                                              msgpack.packb([MIGRATED, *base]))]  # fmt: skip
        states.append(Put(head_key, msgpack.packb([name, MIGRATED, *head, []])))
        moved += backend.apply(events_scope, states, time(), (Expect(head_key, None),)) is not None
    backend.drop_legacy_events()
    return moved
