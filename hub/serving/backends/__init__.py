"""Model runtimes behind one small :class:`Backend` interface; heavy imports happen inside each backend."""

from hub.serving.backends.base import BACKENDS, Backend, load_backend

__all__ = ["BACKENDS", "Backend", "load_backend"]
