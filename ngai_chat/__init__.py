"""ngai_chat: relay AI chat answers from OpenRouter to browsers as Server-Sent Events.

::

    from ngai_chat import create_app, chat_blueprint
    app = create_app()                                            # standalone
    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")  # mounted
"""

from __future__ import annotations

from ._version import __version__ as __version__
from .app import create_app as create_app
from .config import ConfigError as ConfigError
from .config import Settings as Settings
from .doors import chat_blueprint as chat_blueprint
from .services import get_services as get_services

__all__ = ["ConfigError", "Settings", "__version__", "chat_blueprint", "create_app", "get_services"]
