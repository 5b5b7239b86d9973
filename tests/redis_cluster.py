"""A Redis Cluster made for a test: 3 masters and 3 replicas on free
loopback ports, put together with CLUSTER commands (no redis-cli needed)."""

import re
import time

from redis_server import RedisServer, command, free_port, wait_for

SLOTS = 16384
CLUSTER_OPTIONS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
)


def reply_text(reply):
    """The text of a bulk-string reply."""
    header, rest = reply.split(b"\r\n", 1)
    return rest[: int(header[1:])].decode()


class RedisCluster:
    """With `tls` (Certificates), every node, the bus and replication speak
    TLS only; `options` go to every node's command line."""

    def __init__(self, masters=3, replicas_per_master=1, tls=None, options=()):
        count = masters * (1 + replicas_per_master)
        options = CLUSTER_OPTIONS + tuple(options)
        if tls is not None:
            options += ("--tls-cluster", "yes", "--tls-replication", "yes")
        # The bus port defaults to port + 10000, past 65535 for high ports.
        self.bus_ports = [free_port() for _ in range(count)]
        self.servers = [
            RedisServer(*options, "--cluster-port", str(bus), tls=tls)
            for bus in self.bus_ports
        ]
        try:
            self._assemble(masters, replicas_per_master)
        except BaseException:
            self.stop()
            raise

    def _assemble(self, masters, replicas_per_master):
        self.masters = self.servers[:masters]
        self.replicas = self.servers[masters:]
        for at, master in enumerate(self.masters):
            first = at * SLOTS // masters
            last = (at + 1) * SLOTS // masters - 1
            ask(master, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for server, bus in zip(self.servers[1:], self.bus_ports[1:], strict=True):
            ask(self.servers[0], "CLUSTER", "MEET", "127.0.0.1", server.port, bus)
        wait_for(
            lambda: all(
                self.nodes(server).count("connected") == len(self.servers)
                for server in self.servers
            ),
            "every node to know every other",
        )
        ids = [reply_text(ask(m, "CLUSTER", "MYID")) for m in self.masters]
        for at, replica in enumerate(self.replicas):
            reply = ask(replica, "CLUSTER", "REPLICATE", ids[at % masters])
            assert reply == b"+OK\r\n", reply
        wait_for(self.healthy, "the cluster to be ok with its replicas in sync")

    @staticmethod
    def nodes(server):
        return reply_text(ask(server, "CLUSTER", "NODES"))

    def healthy(self):
        for server in self.servers:
            if b"cluster_state:ok" not in ask(server, "CLUSTER", "INFO"):
                return False
        return all(
            b"master_link_status:up" in ask(r, "INFO", "replication")
            for r in self.replicas
        )

    def settled(self):
        """Whether every node sees the same masters serving the same slots,
        none of them failing: after a failover or a slot move, gossip takes
        a moment to reach them all."""
        views = set()
        for server in self.servers:
            masters = []
            for line in self.nodes(server).splitlines():
                fields = line.split()
                node_id, flags = fields[0], fields[2]
                if "fail" in flags:
                    return False
                if "master" in flags:
                    slots = [r for r in fields[8:] if not r.startswith("[")]
                    masters.append((node_id, tuple(slots)))
            views.add(tuple(sorted(masters)))
        return len(views) == 1

    def require_password(self, password):
        """From now on every node, and replication, needs `password`."""
        for server in self.servers:
            ask(server, "CONFIG", "SET", "masterauth", password)
            ask(server, "CONFIG", "SET", "requirepass", password)

    def current_masters(self):
        """The servers that are masters now (failovers change which)."""
        return [
            server
            for server in self.servers
            if b"role:master" in ask(server, "INFO", "replication")
        ]

    @property
    def urls(self):
        return [server.url for server in self.masters]

    def stop(self):
        for server in self.servers:
            server.stop()


def ask(server, *words):
    """`command` to `server`, over TLS if that is what it speaks."""
    return command(server.port, *words, tls=server.tls_context)


def keys_in(reply):
    """The bulk strings of an array reply."""
    return re.findall(rb"\$\d+\r\n([^\r]*)\r\n", reply)


def masters_by_slot(cluster, key):
    """The slot of `key`, and (owns it, node id, server) for each master."""
    any_server = cluster.current_masters()[0]
    slot = int(command(any_server.port, "CLUSTER", "KEYSLOT", key)[1:-2])
    masters = []
    for line in cluster.nodes(any_server).splitlines():
        fields = line.split()
        if "master" not in fields[2] or "fail" in fields[2]:
            continue
        port = int(fields[1].split("@")[0].split(":")[1])
        server = next(s for s in cluster.servers if s.port == port)
        owns = any(
            int(r.split("-")[0]) <= slot <= int(r.split("-")[-1])
            for r in fields[8:]
            if not r.startswith("[")
        )
        masters.append((owns, fields[0], server))
    return slot, masters


def owner_of(cluster, key):
    """The master serving `key`."""
    _, masters = masters_by_slot(cluster, key)
    return next(server for owns, _, server in masters if owns)


def migrate_slot_of(cluster, key, dwell=0.0):
    """Moves the slot holding `key` to another master, keys and all, the way
    redis-cli --cluster reshard does (IMPORTING/MIGRATING, MIGRATE, NODE),
    resting `dwell` seconds at each step, so traffic meets every state."""
    wait_for(cluster.settled, "every node to agree on who serves what")
    slot, masters = masters_by_slot(cluster, key)
    (_, source_id, source), *_ = [m for m in masters if m[0]]
    (_, target_id, target), *_ = [m for m in masters if not m[0]]
    command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    while True:
        time.sleep(dwell)
        keys = keys_in(command(source.port, "CLUSTER", "GETKEYSINSLOT", slot, 100))
        if not keys:
            break
        reply = command(
            source.port, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
        )
        assert reply == b"+OK\r\n", reply
    for owner in (target, source, *cluster.current_masters()):
        reply = command(owner.port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        assert reply == b"+OK\r\n", reply
    return slot, source, target
