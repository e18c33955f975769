"""The public surface: what host apps and wsgi.py import."""

from __future__ import annotations

import ngai_chat


def test_public_names() -> None:
    assert sorted(ngai_chat.__all__) == [
        "ConfigError",
        "Settings",
        "__version__",
        "chat_blueprint",
        "create_app",
        "get_services",
    ]
    for name in ngai_chat.__all__:
        assert getattr(ngai_chat, name) is not None
    assert ngai_chat.chat_blueprint.name == "ngai_chat"
