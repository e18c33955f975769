"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` (see the Procfile)."""

from __future__ import annotations

import sys

from ngai_chat import ConfigError
from ngai_chat import create_app

try:
    app = create_app()
except ConfigError as exc:
    print(f"ngai_chat: {exc}", file=sys.stderr)
    # gunicorn's "worker failed to boot" code: the master stops instead of
    # restarting workers that can never start.
    sys.exit(3)
