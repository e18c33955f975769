"""A generation ends its log exactly once, however early it is stopped."""

from __future__ import annotations

import json
import typing as t

import gevent

from bench.fake_chunks import make_chunk
from ngai_chat import generation as generation_module
from ngai_chat import get_services
from ngai_chat.chunks import Chunk
from ngai_chat.chunks import parse_chunk
from ngai_chat.generation import Generation
from tests.support.helpers import wait_until


def test_a_generation_stopped_before_it_began_still_ends_its_log(app: t.Any, client: t.Any) -> None:
    """Stopped between its spawn and its first step (a cancel, or a new answer for
    the same chat, in the same greenlet step as the start), it still writes
    ``done``/``cancelled`` and leaves the relay, so that no reader waits forever.
    """
    prepared = client.post("/prepare", json={"messages": [{"role": "user", "content": "Hi"}]})
    session_id = prepared.get_json()["sessionId"]
    with app.app_context():
        services = get_services()
        session = services.store.get(session_id)
        assert session is not None
        assert services.relay.start(session)  # spawned, not yet run: no switch since
        generation = services.relay.running[session_id]
        generation.stop("cancelled")
        wait_until(lambda: session_id not in services.relay.running, 5, sleep=gevent.sleep)
        events = services.store.read(session_id, 0, timeout=1)
    assert [event.name for event in events] == ["done"]
    assert '"finishReason":"cancelled"' in events[0].data


class _Upstream:
    """An upstream whose answer is ``chunks`` chunks, ``gap`` seconds apart (0: all
    ready at once, never waiting on the network)."""

    name = "test"

    def __init__(self, chunks: int, gap: float) -> None:
        self.chunks, self.gap = chunks, gap

    def stream_chat(self, body: dict[str, t.Any], *, referer: str | None) -> t.Any:
        upstream = self

        class Stream:
            def __iter__(self) -> t.Iterator[Chunk]:
                for i in range(upstream.chunks):
                    if upstream.gap:
                        gevent.sleep(upstream.gap)  # the loop goes round: others run
                    chunk = parse_chunk(json.dumps(make_chunk(f"{i} ")).encode())
                    assert chunk is not None
                    yield chunk
                chunk = parse_chunk(json.dumps(make_chunk(None, finish_reason="stop")).encode())
                assert chunk is not None
                yield chunk

            def close(self) -> None:
                pass

        return Stream()

    def list_models(self) -> dict[str, t.Any]:
        return {"data": []}

    def close(self) -> None:
        pass


def _run(app: t.Any, client: t.Any, upstream: _Upstream) -> Generation:
    prepared = client.post("/prepare", json={"messages": [{"role": "user", "content": "Hi"}]})
    session_id = prepared.get_json()["sessionId"]
    with app.app_context():
        services = get_services()
        session = services.store.get(session_id)
        assert session is not None
        generation = Generation(
            session,
            store=services.store,
            upstream=upstream,
            max_events=100_000,
            max_log_bytes=100_000_000,
            metrics=services.metrics,
            spawn=gevent.spawn,
            on_end=lambda _: None,
        )
        gevent.spawn(generation.run).join(timeout=30)
    return generation


def test_an_upstream_that_never_waits_does_not_starve_the_others(app: t.Any, client: t.Any) -> None:
    """Chunks that are all there at once (a burst in one network read) are relayed a
    slice at a time: another greenlet runs while they are."""
    ran: list[int] = []

    def other() -> None:
        while True:
            ran.append(len(ran))
            gevent.sleep(0)

    beside = gevent.spawn(other)
    gevent.sleep(0)
    try:
        before = len(ran)
        generation = _run(app, client, _Upstream(20_000, 0.0))
        assert generation.events == 20_001
        assert len(ran) - before > 5  # it had turns while the 20,000 chunks went by
    finally:
        beside.kill()


def test_an_upstream_that_waits_between_chunks_costs_no_extra_yield(
    app: t.Any, client: t.Any, monkeypatch: t.Any
) -> None:
    """Waiting for the upstream's next chunk already let every other greenlet run:
    no ``sleep(0)`` per chunk on top (a switch to the hub and back each)."""
    yields: list[float] = []
    sleep = gevent.sleep

    def counting_sleep(seconds: float = 0) -> None:
        if seconds == 0:
            yields.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(generation_module.gevent, "sleep", counting_sleep)
    generation = _run(app, client, _Upstream(50, 0.002))
    assert generation.events == 51
    assert len(yields) <= 2  # (the test's own upstream sleeps are not 0)
