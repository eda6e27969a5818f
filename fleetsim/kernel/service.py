"""One lifecycle for the long-running runtimes: stop signals, the metrics server, a graceful stop.

API (stable; the bridge, the streaming job, the dashboard launcher and the simulator use it):

``STOP_SIGNALS``
    ``(SIGTERM, SIGINT)``: the signals that ask a runtime to stop gracefully.

``StopSignals(stop=None, *, name="", log=None, signals=STOP_SIGNALS, action=None)``
    Context manager. While active, each of ``signals`` logs ``"signal N: stopping <name>
    gracefully"``, sets the event ``.stop`` (a new one when ``stop`` is None) and then calls
    ``action(signum)`` if given. ``install() -> bool`` (False, and nothing installed, off the main
    thread, where Python cannot install handlers), ``restore()`` puts the previous handlers back
    (idempotent); ``__enter__`` installs, ``__exit__`` restores. ``.signum``: the last signal
    received (None before any).

``MetricsServer(registry, port, *, host="127.0.0.1")``
    Prometheus ``/metrics`` of ``registry`` in a daemon thread. ``start() -> self`` (port 0: off,
    nothing bound, as ``*.metrics_port = 0`` has always meant), ``stop()`` (idempotent: shuts the
    server down, closes the socket so the port is free again, joins the thread), ``.running``,
    ``.port``, ``.url`` (``""`` when off); context manager (``__exit__`` stops).
``serve_metrics(registry, port, *, host="127.0.0.1") -> MetricsServer``
    ``MetricsServer(...).start()``.

``Service(name, *, log=None, stop=None, signals=STOP_SIGNALS, handle_signals=True)``
    The whole lifecycle of one runtime process, as a context manager::

        with Service("bridge", log=log) as svc:          # SIGTERM/SIGINT -> svc.stop is set
            svc.serve_metrics(registry, port)            # optional; stopped last
            svc.on_stop(bridge.stop, timeout=30)         # graceful-stop steps, run LIFO at exit
            svc.wait()                                   # until a signal or svc.request_stop()
        # exit: stop steps (reverse order of registration; each runs even if an earlier one
        # raised), metrics server stopped, previous signal handlers restored.

    ``.stop`` (threading.Event), ``.stopping`` (bool), ``request_stop()``, ``wait(poll_s=0.5)``
    (wakes every ``poll_s`` so handlers run promptly), ``on_stop(fn, *args, **kwargs) -> fn``,
    ``serve_metrics(registry, port) -> MetricsServer``. ``handle_signals=False`` (or a non-main
    thread) skips the handlers: the caller sets ``stop`` itself.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Self

from prometheus_client import CollectorRegistry, start_http_server

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
"""Signals that ask a runtime to stop gracefully."""

_log = logging.getLogger("fleetsim.service")


class StopSignals:
    """SIGTERM/SIGINT (by default) set a stop event while installed; see the module docstring."""

    def __init__(
        self,
        stop: threading.Event | None = None,
        *,
        name: str = "",
        log: logging.Logger | None = None,
        signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
        action: Callable[[int], object] | None = None,
    ) -> None:
        self.stop = stop if stop is not None else threading.Event()
        self.name = name
        self.log = log or _log
        self.signals = signals
        self.action = action
        self.signum: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        self.log.info("signal %d: stopping %s gracefully", signum, self.name or "the service")
        self.stop.set()
        if self.action is not None:
            self.action(signum)

    def install(self) -> bool:
        """Install the handlers; False (nothing installed) off the main thread."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return bool(self._previous)
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def __enter__(self) -> Self:
        self.install()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.restore()


class MetricsServer:
    """Prometheus ``/metrics`` of one registry on ``host:port`` (port 0: off)."""

    def __init__(self, registry: CollectorRegistry, port: int, *, host: str = "127.0.0.1") -> None:
        self.registry = registry
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics" if self.port else ""

    def start(self) -> Self:
        """Bind and serve in a daemon thread (no-op when the port is 0 or already serving)."""
        if self.port and self._server is None:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        return self

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def serve_metrics(registry: CollectorRegistry, port: int, *, host: str = "127.0.0.1") -> MetricsServer:
    """A started :class:`MetricsServer` (port 0: off)."""
    return MetricsServer(registry, port, host=host).start()


class Service:
    """Stop signals + metrics server + ordered graceful stop of one runtime process."""

    def __init__(
        self,
        name: str,
        *,
        log: logging.Logger | None = None,
        stop: threading.Event | None = None,
        signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
        handle_signals: bool = True,
    ) -> None:
        self.name = name
        self.log = log or _log
        self.signals = StopSignals(stop, name=name, log=self.log, signals=signals)
        self.handle_signals = handle_signals
        self._exit = contextlib.ExitStack()

    @property
    def stop(self) -> threading.Event:
        return self.signals.stop

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def request_stop(self) -> None:
        self.stop.set()

    def wait(self, poll_s: float = 0.5) -> None:
        """Block until a stop is requested (a signal or :meth:`request_stop`)."""
        while not self.stop.wait(poll_s):
            pass

    def on_stop(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        """Run ``fn(*args, **kwargs)`` at exit; steps run in reverse order of registration."""
        self._exit.callback(fn, *args, **kwargs)
        return fn

    def serve_metrics(
        self, registry: CollectorRegistry, port: int, *, host: str = "127.0.0.1"
    ) -> MetricsServer:
        """Serve ``registry`` (port 0: off); stopped at exit after the steps registered later."""
        server = serve_metrics(registry, port, host=host)
        if server.running:
            self.log.info("%s metrics on %s", self.name, server.url)
        self._exit.callback(server.stop)
        return server

    def __enter__(self) -> Self:
        # Handlers first, so a signal during start-up already means "stop gracefully"; they are
        # restored last, so a second signal during the stop steps cannot kill them halfway.
        if self.handle_signals:
            self.signals.install()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop.set()
        try:
            self._exit.__exit__(exc_type, exc, tb)
        finally:
            self.signals.restore()
