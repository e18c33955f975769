"""``python -m ngai_chat``: serve with gunicorn's gevent worker, as in production.

With no ``OPENROUTER_API_KEY`` in the environment or ``.env`` (and ``NGAI_DEMO``
unset), it serves the offline demo model and says so.
"""

from __future__ import annotations

import os
import sys

from .config import read_dotenv
from .log import emit


def main() -> None:
    env = {**read_dotenv(), **os.environ}
    if not env.get("OPENROUTER_API_KEY", "").strip() and "NGAI_DEMO" not in env:
        os.environ["NGAI_DEMO"] = "1"
        emit(
            "no OPENROUTER_API_KEY found (environment or .env): starting in DEMO mode with "
            "the offline model 'ngai/demo'. Put OPENROUTER_API_KEY=... in .env to relay "
            "real models.",
            level="warning",
        )
    emit(f"serving on http://localhost:{env.get('PORT', '3000')}/")
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
