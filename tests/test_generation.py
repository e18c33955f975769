"""A generation ends its log exactly once, however early it is stopped."""

from __future__ import annotations

import typing as t

import gevent

from ngai_chat import get_services
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
