"""The web console (``/ui``) and offline API docs (``/docs``), served by the hub."""

from hub.console.mount import mount_console

__all__ = ["mount_console"]
