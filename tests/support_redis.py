"""Redis for the tests: a fresh key prefix per test on the local server, and one
3-primary Redis Cluster per test session, started lazily from the `redis-server` binary.

The server comes from SATCHEL_TEST_REDIS_URL (default: redis://127.0.0.1:6379/0). Start
a stopped local server with the command in START_HINT. The cluster lives in a temp dir
on free loopback ports; `stop_cluster` (called at session end, and at exit as a
fallback) terminates exactly the processes it started.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from satchel._backends.urls import redact

BASE_URL = os.environ.get("SATCHEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_HINT = (
    'start it with `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log`"
)
CLUSTER_PRIMARIES = 3
START_TIMEOUT = 20.0  # seconds; a cluster usually takes two

_reachable: bool | None = None


def _prefix() -> str:
    return f"t-{uuid.uuid4().hex[:16]}:"


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def fresh_url(tmp_path: Path) -> str:
    """URL of an empty satchel store on the local Redis, under a key prefix of its own."""
    global _reachable
    if _reachable is None:
        try:
            client = redis.Redis.from_url(BASE_URL, socket_timeout=3, socket_connect_timeout=3)
            client.ping()
            client.close()
            _reachable = True
        except redis.RedisError as exc:
            _reachable = False
            print(f"Redis unreachable at {redact(BASE_URL)}: {exc}")
    if not _reachable:
        from conftest import require_service

        require_service("Redis", f"cannot connect to {redact(BASE_URL)}; {START_HINT}")
    return _with_prefix(BASE_URL, _prefix())


def fresh_cluster_url(tmp_path: Path) -> str:
    """URL of an empty satchel store on the session's Redis Cluster (started on first use)."""
    try:
        ports = _cluster.start()
    except RuntimeError as exc:
        from conftest import require_service

        require_service("Redis Cluster", f"could not start one from redis-server: {exc}")
    nodes = ",".join(f"127.0.0.1:{port}" for port in ports)
    return _with_prefix(f"redis+cluster://{nodes}", _prefix())


def prefix_of(url: str) -> str:
    """The key prefix of a test URL."""
    return dict(parse_qsl(urlsplit(url).query))["prefix"]


def drop(url: str) -> None:
    """Delete every key under the prefix `url` names (on every primary of a cluster)."""
    prefix = prefix_of(url)
    match = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    match = match.replace("[", "\\[").replace("]", "\\]") + "*"
    client = client_for(url)
    names = list(client.scan_iter(match=match, count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.unlink(name)
    pipe.execute()


_admins: dict[str, redis.Redis | RedisCluster] = {}


def client_for(url: str) -> redis.Redis | RedisCluster:
    """A plain redis-py client of the server (or cluster) a test URL names, kept for the
    session (opening one costs a few ms)."""
    address = url.partition("?")[0]
    client = _admins.get(address)
    if client is None:
        if address.startswith("redis+cluster://"):
            hosts = (node.split(":") for node in urlsplit(address).netloc.split(","))
            nodes = [ClusterNode(host, int(port)) for host, port in hosts]
            client = RedisCluster(startup_nodes=nodes)
        else:
            client = redis.Redis.from_url(address)
        _admins[address] = client
    return client


def stop_cluster() -> None:
    """Stop the session's Redis Cluster, if one was started. Idempotent."""
    _cluster.stop()


# --- local servers: the session's cluster, private servers for tests ------------------


def free_port() -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 10000 > 65535:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("found no free pair of loopback ports for a cluster node")


class LocalServers:
    """`count` redis-server processes on free loopback ports, in a temp dir of their own;
    with `cluster`, one Redis Cluster of that many primaries. `stop` ends exactly them."""

    def __init__(self, count: int, *, cluster: bool = False, args: Sequence[str] = ()) -> None:
        self.count = count
        self.cluster = cluster
        self.args = list(args)
        self.ports: list[int] | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dir: str | None = None
        self.failure: str | None = None  # why start() failed; it is not tried again

    def start(self) -> list[int]:
        """Start the servers (once); return their ports. Raises RuntimeError on failure."""
        if self.failure is not None:
            raise RuntimeError(self.failure)
        if self.ports is None:
            try:
                self._start()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                self.stop()
                self.failure = str(exc)
                raise RuntimeError(self.failure) from exc
        assert self.ports is not None
        return self.ports

    def _start(self) -> None:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli must be on PATH")
        self.dir = tempfile.mkdtemp(prefix="satchel-redis-")
        atexit.register(self.stop)
        ports: list[int] = []
        while len(ports) < self.count:
            port = free_port()
            if port not in ports:
                ports.append(port)
        for port in ports:
            args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--daemonize", "no", "--dir", self.dir]
            args += ["--logfile", f"redis-{port}.log", *self.args]
            if self.cluster:
                args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
                args += ["--cluster-node-timeout", "5000"]
            self.procs.append(subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + START_TIMEOUT
        for port in ports:
            # any reply (even NOAUTH) means the server is up
            self._wait(deadline, lambda p=port: _replies(p))
        if self.cluster:
            nodes = [f"127.0.0.1:{port}" for port in ports]
            subprocess.run(
                [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT,
            )
            for port in ports:
                self._wait(deadline, lambda p=port: _cluster_ok(p))
        self.ports = ports

    def _wait(self, deadline: float, ready: Callable[[], bool]) -> None:
        while not ready():
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {proc.returncode} (see {self.dir})"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up in time (see {self.dir})")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the servers (SIGTERM, then SIGKILL) and remove their dir. Idempotent."""
        if self.ports is not None:
            for port in self.ports:
                for address in [a for a in _admins if f"127.0.0.1:{port}" in a]:
                    _admins.pop(address).close()
        procs, self.procs, self.ports = self.procs, [], None
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _replies(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return bool(sock.recv(64))
    except OSError:
        return False


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        return bool(client.cluster("INFO")["cluster_state"] == "ok")
    except redis.RedisError:
        return False
    finally:
        client.close()


_cluster = LocalServers(CLUSTER_PRIMARIES, cluster=True)
