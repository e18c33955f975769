"""``python -m ngai_chat``: serve with gunicorn's gevent worker, as in production.

With no ``OPENROUTER_API_KEY`` in the environment or ``.env`` (and ``NGAI_DEMO``
unset), it serves the offline demo model. It listens on ``HOST:PORT``
(``127.0.0.1:3000`` unless told otherwise, e.g. ``HOST=0.0.0.0``).

Startup says each thing once, in order: the settings are checked here first (a bad
one shows only its error), then gunicorn's master gives the notices (demo mode,
the open-relay warning) and says "serving on …" once it listens.
"""

from __future__ import annotations

import os
import sys

from .config import ConfigError
from .config import load_settings
from .config import read_dotenv
from .log import emit


def main() -> None:
    env = {**read_dotenv(), **os.environ}
    if not env.get("OPENROUTER_API_KEY", "").strip() and "NGAI_DEMO" not in env:
        # the master's demo notice says so, and how to relay real models instead
        os.environ["NGAI_DEMO"] = "1"
    try:
        load_settings()
    except ConfigError as exc:
        emit(str(exc), level="error")
        sys.exit(1)
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:ngai_chat.gunicorn_conf",
        *sys.argv[1:],
        "ngai_chat.app:create_app()",
    ]
    os.execv(sys.executable, args)


if __name__ == "__main__":
    main()
