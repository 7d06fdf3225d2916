"""Voltwatch: a smart electrical-safety hub.

Plugins import `hookimpl` from here: `from hub import hookimpl`.
"""

from .core.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
__version__ = "0.1.0"
