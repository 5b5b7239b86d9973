"""A TCP proxy in front of a server whose open connections can be made to go
silent, as a firewall or load balancer does when it forgets an idle
connection without closing it: nothing passes, and neither end hears."""

import select
import socket
import threading


class SilencingProxy:
    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.silenced = []
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self):
        """Every connection open now carries nothing from here on."""
        for silent in self.silenced:
            silent.set()

    def close(self):
        self.listener.close()
        self.silence()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            silent = threading.Event()
            self.silenced.append(silent)
            pump = threading.Thread(
                target=self._pump, args=(client, server, silent), daemon=True
            )
            pump.start()

    @staticmethod
    def _pump(client, server, silent):
        peers = {client: server, server: client}
        with client, server:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                for end in readable:
                    try:
                        data = end.recv(65536)
                    except ConnectionResetError:  # an end gave up on it
                        return
                    if not data:
                        return
                    if not silent.is_set():
                        peers[end].sendall(data)
