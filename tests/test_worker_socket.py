"""The worker's client socket (``ngai_chat.worker._ClientSocket``): a write that
fits is one ``send`` (no ``getsockopt`` first, as gevent's ``sendall`` does on
every write), a bigger one still goes out whole, and a reader that takes nothing
still times the write out (``NGAI_CLIENT_TIMEOUT``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_client_socket_writes_whole_and_times_out() -> None:
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import json, socket, gevent
        from ngai_chat.worker import _ClientSocket
        out = {}
        ours, theirs = socket.socketpair()
        ours.__class__ = _ClientSocket
        ours.settimeout(1.0)
        ours.sendall(b"event: chunk\\ndata: {}\\n\\n")
        out["small"] = theirs.recv(100).decode()
        big = bytes(range(256)) * 40_000  # ~10 MB: many times the socket buffer
        got = bytearray()
        def read():
            while len(got) < len(big):
                got.extend(theirs.recv(1 << 16))
                gevent.sleep(0)
        reader = gevent.spawn(read)
        ours.sendall(big)
        reader.join(10)
        out["big_whole"] = bytes(got) == big
        try:
            ours.sendall(big)  # nobody reads now
            out["timeout"] = "none"
        except (TimeoutError, socket.timeout) as exc:
            out["timeout"] = type(exc).__name__
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["small"] == "event: chunk\ndata: {}\n\n"
    assert out["big_whole"] is True
    assert out["timeout"] in {"TimeoutError", "timeout"}
