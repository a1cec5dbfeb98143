"""A TCP proxy in front of a real server that can lose one reply on purpose.

Armed, it closes the connection that carries the server's next reply instead of passing that
reply on: the server did the work (and, for an autocommit statement, committed it), the
client only sees its connection break. That is the "commit reached the server, its reply was
lost" fault of a dropped network link, reproduced without touching the server.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class ReplyDropper:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.dropped = threading.Event()
        self._armed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def arm(self) -> None:
        """Lose the next reply that any connection receives from the server."""
        self.dropped.clear()
        self._armed.set()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def __enter__(self) -> ReplyDropper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            for source, target, replies in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, target, replies), daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self._armed.is_set():
                    self._armed.clear()
                    self.dropped.set()
                    return  # the reply is not passed on; both ends are closed below
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
