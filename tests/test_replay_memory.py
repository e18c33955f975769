"""Replay memory is bounded (SPEC §5 invariant 7, issue 15 point 3): each event is kept
once, finished logs stay under ``NGAI_MAX_REPLAY_BYTES`` with the oldest dropped
first, and freed memory goes back to the OS.
"""

from __future__ import annotations

import json
import tracemalloc
import uuid

import pytest

from ngai_chat import sse
from ngai_chat.config import ConfigError
from ngai_chat.config import load_settings
from ngai_chat.store import MemoryStore
from ngai_chat.store import SessionInfo
from ngai_chat.store.base import Event
from ngai_chat.store.base import data_of
from ngai_chat.store.log import EVENT_OVERHEAD
from ngai_chat.store.log import EventLog
from ngai_chat.store.memory import release_memory
from tests.support.helpers import Clock

T0 = 1_700_000_000.0
#: a chunk event's data, about as big as a real one
CHUNK = json.dumps(
    {"choices": [{"delta": {"content": "word " * 20}, "index": 0}], "model": "m/x", "id": "g"}
)


def finished_session(store: MemoryStore, clock: Clock, events: int = 10) -> str:
    session = SessionInfo(uuid.uuid4().hex, {"model": "m"}, None, clock() + 600)
    store.create(session)
    assert store.claim(session.id)
    store.append_many(session.id, [("chunk", CHUNK)] * events)
    assert store.append(session.id, "done", '{"finishReason":"stop"}') == events + 1
    return session.id


def test_finished_logs_stay_under_the_cap_oldest_dropped_first() -> None:
    clock = Clock(T0)
    probe = EventLog()
    for _ in range(10):
        probe.append("chunk", CHUNK)
    probe.append("done", '{"finishReason":"stop"}')
    one_log = probe.nbytes
    store = MemoryStore(replay_ttl=300, clock=clock, max_replay_bytes=3 * one_log)
    sessions = [finished_session(store, clock) for _ in range(3)]
    assert store.replay_bytes == 3 * one_log
    assert all(store.get(sid) is not None for sid in sessions)

    newer = [finished_session(store, clock) for _ in range(2)]
    assert store.replay_bytes <= store.max_replay_bytes
    # the two oldest went, and answer as expired sessions do
    assert [store.get(sid) is None for sid in sessions + newer] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert store.read(sessions[0], 0, timeout=0) == []
    assert [e.id for e in store.read(sessions[2], 0, timeout=0)] == list(range(1, 12))

    # running logs do not count, and expiry frees the count too
    running = SessionInfo("running", {"model": "m"}, None, clock() + 600)
    store.create(running)
    assert store.claim(running.id)
    store.append_many(running.id, [("chunk", CHUNK)] * 50)
    assert store.get(sessions[2]) is not None
    clock.advance(300)
    store.sweep(clock())
    assert store.replay_bytes == 0
    assert store.get(running.id) is not None


def test_a_log_bigger_than_the_cap_stays_while_it_is_the_newest() -> None:
    clock = Clock(T0)
    store = MemoryStore(replay_ttl=300, clock=clock, max_replay_bytes=100)
    first = finished_session(store, clock)
    assert store.get(first) is not None  # its readers may still be reading it
    second = finished_session(store, clock)
    assert store.get(first) is None
    assert store.get(second) is not None


def test_each_event_is_kept_once() -> None:
    log = EventLog()
    log.append("chunk", CHUNK)  # the list's first growth
    # distinct data strings, as the generation makes them (a shared one costs nothing)
    chunks = [CHUNK.replace("word", f"w{n:03d}", 1) for n in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for data in chunks:
            log.append("chunk", data)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    frame = len(sse.event(CHUNK, name="chunk", id=100))
    # the frame, its object and list slots, and no second copy of the data
    assert grown < 300 * (frame + EVENT_OVERHEAD + 16), (grown, frame)
    assert grown < 300 * (frame + len(CHUNK))
    assert log.nbytes == pytest.approx(grown, rel=0.25)


@pytest.mark.parametrize(
    "data",
    [
        CHUNK,
        "",
        '{"a":"Grüße 世界 👋"}',
        "line one\nline two\n\nline four",
        "data: looks like a field\ndata: again",
        "a\rb\r\nc",  # \r is framed as a line break: kept apart
        '{"a":"\ud83d"}',  # a lone surrogate is framed as its escape: kept apart
        "trailing newline\n",
    ],
)
def test_data_comes_back_exactly(data: str) -> None:
    log = EventLog()
    log.append("chunk", data)
    log.append("done", data)
    events = log.read(0)
    assert [(e.id, e.name, e.data) for e in events] == [(1, "chunk", data), (2, "done", data)]
    assert events[0].frame == sse.event(data, name="chunk", id=1)
    assert events[1].terminal
    assert events[0] == Event(1, "chunk", data)


def test_data_of_reads_the_frames_sse_makes() -> None:
    for data in ("{}", "x\ny", "", "\n"):
        assert data_of(sse.event(data, name="chunk", id=7)) == data
    assert Event(3, "chunk", None, sse.event("a\nb", name="chunk", id=3)).data == "a\nb"


def test_the_setting() -> None:
    def load(**environ: str) -> int:
        return load_settings({}, {"NGAI_DEMO": "1", **environ}, {}).max_replay_bytes

    assert load() == 268_435_456
    assert load(NGAI_MAX_REPLAY_BYTES="1000") == 1000
    with pytest.raises(ConfigError, match="NGAI_MAX_REPLAY_BYTES"):
        load(NGAI_MAX_REPLAY_BYTES="-1")


def test_freed_memory_goes_back_to_the_os() -> None:
    assert release_memory() is True  # glibc here: malloc_trim is there
