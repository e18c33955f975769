"""The version of ngai_chat, in a leaf module.

Modules that the package root imports read it from here rather than from
``ngai_chat`` itself (which would import them back), and ``pyproject.toml`` reads
it from here too.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
