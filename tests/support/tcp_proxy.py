"""A small TCP proxy for fault tests: forward, stall, or refuse connections.

It sits between our backend and the real server on a loopback port of its
own. ``forward()`` relays bytes both ways; ``stall()`` accepts connections but
relays nothing (a hung server or a black-holed network: the kernel still
completes the handshake); ``refuse()`` closes every relayed connection and
refuses new ones (a server that is down). Threads, not asyncio, so that a test
can flip modes from its own thread.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Iterator

_CHUNK = 65536
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # struct linger {on, 0 seconds}


class TcpProxy:
    """Relays 127.0.0.1:<port> to ``upstream``, in the mode the test sets."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = "forward"
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        # The port stays ours in every mode: bound, listening only when up.
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def forward(self) -> None:
        self._set_mode("forward")

    def stall(self) -> None:
        self._set_mode("stall")

    def refuse(self, *, drop_existing: bool = True) -> None:
        """Refuse new connections (RST) and drop the others, like a down server.

        ``drop_existing=False``: open connections carry on (a server out of
        connection slots, say).
        """
        self._set_mode("refuse")
        if drop_existing:
            self._drop_all()

    def close(self) -> None:
        self._closed.set()
        self._drop_all()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(5)

    def _set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode = mode

    def _drop_all(self) -> None:
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                mode = self.mode
            if mode == "refuse":
                _reset(client)
                continue
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.update(sockets)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        selector = selectors.DefaultSelector()
        try:
            selector.register(client, selectors.EVENT_READ)
            while not self._closed.is_set():
                with self._lock:
                    mode = self.mode
                if mode == "stall":  # hold the bytes; relay nothing
                    self._closed.wait(0.05)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                    upstream.settimeout(None)
                    self._track(upstream)
                    selector.register(upstream, selectors.EVENT_READ)
                for key, _ in selector.select(timeout=0.05):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    target = upstream if source is client else client
                    data = source.recv(_CHUNK)
                    if not data:
                        return
                    target.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a dying server's kernel does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        sock.close()


@contextlib.contextmanager
def tcp_proxy(host: str, port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()
