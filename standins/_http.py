"""Shared HTTP plumbing for the stand-in servers (standard library only).

Contracts shared by every stand-in built on :class:`StandInServerBase`:

* the server speaks HTTP/1.1 with keep-alive and always sends ``Content-Length``
  (unless a fault deliberately drops the connection without answering);
* it runs in a daemon thread; ``stop()`` closes the listening socket *and* every
  open keep-alive connection, wakes any injected sleep, and returns only when
  all handler threads have finished, so no sockets outlive the stand-in;
* a stand-in can be started again after it was stopped (on a new port when
  ``port=0``).
"""

import logging
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)


class StandInHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that remembers its open connections.

    ``owner`` is the stand-in object whose ``_serve(handler)`` answers requests.
    """

    daemon_threads = True
    # socketserver's default backlog of 5 resets bursts of concurrent connections.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
        owner: "StandInServerBase",
    ) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler_class)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection, then hand it to a new handler thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection and close it (called by the handler thread)."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Shut down every tracked connection so blocked handler threads return."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log handler exceptions (e.g. a client that hung up) instead of printing."""
        logger.debug("error while serving %s", client_address, exc_info=True)


class StandInRequestHandler(BaseHTTPRequestHandler):
    """Request handler that delegates every method to ``server.owner._serve``."""

    protocol_version = "HTTP/1.1"
    server_version = "StandIn/1.0"
    # Headers and body are separate writes; without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK stall every keep-alive answer by ~40 ms.
    disable_nagle_algorithm = True
    server: StandInHTTPServer

    def _delegate(self) -> None:
        self.server.owner._serve(self)

    do_GET = _delegate
    do_POST = _delegate
    do_DELETE = _delegate
    do_PUT = _delegate
    do_PATCH = _delegate
    do_HEAD = _delegate

    def read_body(self) -> bytes:
        """Read the request body as announced by ``Content-Length`` (empty if absent)."""
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with ``status`` and ``body``, always including Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def drop(self) -> None:
        """Close the connection without writing a single byte of response."""
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Route http.server's access log to ``logging`` at DEBUG."""
        logger.debug("%s %s", self.address_string(), format % args)


class StandInServerBase:
    """Lifecycle (start/stop/context manager) shared by the stand-ins.

    Subclasses implement ``_serve(handler)`` and ``_url(host, port)``.
    """

    def __init__(self) -> None:
        self._server: StandInHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lifecycle_lock = threading.Lock()
        self._host = ""
        self._port = 0

    # -- to be provided by subclasses -------------------------------------
    def _serve(self, handler: StandInRequestHandler) -> None:
        raise NotImplementedError

    def _url(self, host: str, port: int) -> str:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port) and serve in a daemon thread.

        Returns the stand-in's URL. Raises RuntimeError if already running and
        OSError if the address cannot be bound.
        """
        with self._lifecycle_lock:
            if self._server is not None:
                raise RuntimeError(f"{type(self).__name__} is already running")
            self._stopping = threading.Event()
            server = StandInHTTPServer((host, port), StandInRequestHandler, self)
            self._server = server
            self._host, self._port = host, int(server.server_address[1])
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.01},  # how long stop() may wait
                name=f"{type(self).__name__}-{self._port}",
                daemon=True,
            )
            self._thread.start()
        url = self._url(self._host, self._port)
        logger.debug("%s listening on %s", type(self).__name__, url)
        return url

    def stop(self) -> None:
        """Stop serving and close every connection; a no-op when not running."""
        with self._lifecycle_lock:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._stopping.set()
            server.shutdown()
            server.close_open_connections()
            server.server_close()  # joins the handler threads
            if thread is not None:
                thread.join(timeout=5)
            self._server = None
            self._thread = None
        logger.debug("%s stopped", type(self).__name__)

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port; raises RuntimeError when not running."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when the stand-in is stopped."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_foreground(standin: StandInServerBase) -> None:
    """Block until SIGINT/SIGTERM, then stop ``standin`` (used by the CLIs)."""
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received signal %d, stopping", signum)
        done.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):
            pass
    finally:
        standin.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
