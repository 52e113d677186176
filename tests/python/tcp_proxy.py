"""A TCP proxy the tests control: stopping it makes what is behind it
unreachable (connections refused, open ones cut); starting it again on the
same port brings it back. `delay` (seconds) holds every chunk of bytes
that long before passing it on, in both directions: a slow network.
`loss` (a probability) is a lossy one as TCP shows it to its ends: a chunk
is held for a retransmission timeout (0.2 to 1 s) that often, and one
connection in twenty of those is cut instead."""
import contextlib
import random
import socket
import threading
import time


class Proxy:
    """A TCP proxy on a fixed port to `target_port` on loopback."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.listener = None
        self.conns = []
        self.delay = 0.0
        self.loss = 0.0

    def start(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen()
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.conns = [c for c in self.conns if c.fileno() != -1] + [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        try:
            while data := a.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                if self.loss and random.random() < self.loss:
                    if random.random() < 0.05:
                        break
                    time.sleep(random.uniform(0.2, 1.0))
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self):
        # Shut down first: that wakes the thread blocked in accept(), which
        # holds the port until it returns.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self.conns = []
