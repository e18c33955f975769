"""A generation ends its log exactly once, however early it is stopped."""

from __future__ import annotations

import typing as t

import gevent

from ngai_chat import generation as generation_module
from ngai_chat import get_services
from ngai_chat.generation import Generation
from ngai_chat.store import SessionInfo
from tests.support.helpers import wait_until
from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import chunk
from tests.support.scripted import generation
from tests.support.scripted import text_stream


def test_a_generation_stopped_before_it_began_still_ends_its_log(app: t.Any, client: t.Any) -> None:
    """Stopped between its spawn and its first step (a cancel, or a new answer for
    the same chat, in the same greenlet step as the start), it still writes
    ``done``/``cancelled`` and leaves the relay, so that no reader waits forever.
    """
    session = _prepared(app, client)
    session_id = session.id
    with app.app_context():
        services = get_services()
        assert services.relay.start(session)  # spawned, not yet run: no switch since
        generation = services.relay.running[session_id]
        generation.stop("cancelled")
        wait_until(lambda: session_id not in services.relay.running, 5, sleep=gevent.sleep)
        events = services.store.read(session_id, 0, timeout=1)
    assert [event.name for event in events] == ["done"]
    assert '"finishReason":"cancelled"' in events[0].data


def _prepared(app: t.Any, client: t.Any) -> SessionInfo:
    """A session made by ``POST /prepare``, as the store holds it."""
    prepared = client.post("/prepare", json={"messages": [{"role": "user", "content": "Hi"}]})
    with app.app_context():
        session = get_services().store.get(prepared.get_json()["sessionId"])
    assert session is not None
    return session


def _run(app: t.Any, client: t.Any, upstream: ScriptedUpstream) -> Generation:
    session = _prepared(app, client)
    with app.app_context():
        relayed = generation(get_services().store, session, upstream)
        gevent.spawn(relayed.run).join(timeout=30)
    return relayed


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
        relayed = _run(app, client, ScriptedUpstream(text_stream(*["x"] * 20_000)))
        assert relayed.events == 20_002
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
    steps = [step for n in range(50) for step in (0.002, chunk(f"{n} "))]
    relayed = _run(app, client, ScriptedUpstream([*steps, chunk("", finish="stop")]))
    assert relayed.events == 51
    assert len(yields) <= 2  # (the upstream's own pauses are not 0)
