"""A host Flask app that mounts the chat blueprint under ``/api/chat``.

It stands for the teams that add the chat to an existing site: registering the
blueprint is all they do (SPEC §1).
"""

from __future__ import annotations

from flask import Flask

from ngai_chat import chat_blueprint

host = Flask(__name__)


@host.get("/")
def home() -> str:
    return '<p>The host site. The chat is at <a href="/api/chat/">/api/chat/</a>.</p>'


host.register_blueprint(chat_blueprint, url_prefix="/api/chat")

app = host
