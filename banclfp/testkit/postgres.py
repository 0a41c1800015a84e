"""A private PostgreSQL for tests and benchmarks: initdb in a temporary folder, its own port and socket folder.

Never the machine's own server: the cluster lives in a fresh folder, listens on a free port
(and on a socket in that folder), and is removed by close(). Optionally it speaks TLS with a
certificate signed by a throw-away CA made with openssl, so a client can use
`sslmode=verify-full` exactly as a Pi does with the lab's CA (docs/labo-serveur.md).

PostgreSQL refuses to run as root: under root the cluster belongs to the `postgres` user
that Debian's postgresql package creates, and every server process runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from banclfp.testkit.support import free_port, terminate

SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    """The folder of initdb/postgres/pg_ctl: Debian's newest /usr/lib/postgresql/N/bin, else initdb's on PATH."""
    def version(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/bin", path)
        return int(match.group(1)) if match else 0

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    if found:
        # /usr/local/bin/initdb is often a link into the real folder, which also holds postgres.
        return Path(os.path.realpath(found)).parent
    raise RuntimeError("PostgreSQL's server is not installed (apt-get install postgresql)")


def _run_as() -> Optional[str]:
    """The user the server must run as: None when we are not root, else Debian's postgres user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root needs the postgres user (apt-get install postgresql)") from None
    return "postgres"


def make_ca_and_server_cert(folder: Path, hosts: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for `hosts` (IP addresses or names); (ca.crt, server.crt, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    ext = folder / "server.ext"
    sans = ",".join(f"IP:{h}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+:[0-9a-fA-F:]*", h) else f"DNS:{h}" for h in hosts)
    ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
            "-days", "2", "-subj", "/CN=banc-lfp test lab CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return ca_crt, crt, key


class PostgresServer:
    """A private PostgreSQL cluster on `host`:<free port>, with a superuser reachable on its own socket."""

    def __init__(self, host: str = "127.0.0.1", port: Optional[int] = None, tls: bool = False,
                 cert_hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), netns: Optional[str] = None) -> None:
        # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach the folder.
        self.workdir = Path(tempfile.mkdtemp(prefix="banc-pg-"))
        self.datadir = self.workdir / "data"
        self.socket_dir = self.workdir / "run"
        self.log_path = self.workdir / "postgres.log"
        self.host = host
        self.port = port or free_port()
        self.tls = tls
        self.cert_hosts = cert_hosts
        self.netns = netns  # run the server inside this network namespace (ip netns exec)
        self.ca_file: Optional[Path] = None
        self.user = _run_as()
        self.bindir = postgres_bin_dir()
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _server_cmd(self, *args: str) -> tuple[list[str], Optional[str]]:
        """The server's command line and the user to start it as (in a namespace: root enters it, then runuser)."""
        if not self.netns:
            return list(args), self.user
        drop = ["runuser", "-u", self.user, "--"] if self.user else []
        return ["ip", "netns", "exec", self.netns, *drop, *args], None

    def start(self, timeout_s: float = 30.0) -> PostgresServer:
        """initdb (first time), then start the server and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        os.chmod(self.workdir, 0o755)
        self._chown(self.workdir)
        if not self.datadir.exists():
            self.socket_dir.mkdir()
            self._chown(self.socket_dir)
            subprocess.run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER, "-A", "trust",
                            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                           check=True, capture_output=True, user=self.user)
            self._write_conf()
        log = open(self.log_path, "ab")
        command, user = self._server_cmd(str(self.bindir / "postgres"), "-D", str(self.datadir))
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, user=user)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.socket_dir),
                                    "-p", str(self.port), "-U", SUPERUSER], check=False)
            if ready.returncode == 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres not ready after {timeout_s} s: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def _write_conf(self) -> None:
        lines = [
            f"listen_addresses = '{self.host}'",  # one address, or several separated by commas
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "fsync = off",  # a test cluster: speed over durability
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 60",
            "shared_buffers = 32MB",
            "log_min_messages = warning",
            "password_encryption = 'scram-sha-256'",
        ]
        # Superuser over the socket only; everyone else by password over TCP (TLS only when asked).
        hba = ["local all all trust"]
        if self.tls:
            ca, crt, key = make_ca_and_server_cert(self.workdir / "tls", self.cert_hosts)
            for path in (crt, key):
                self._chown(path)
            os.chmod(key, 0o600)
            self.ca_file = ca
            lines += ["ssl = on", f"ssl_cert_file = '{crt}'", f"ssl_key_file = '{key}'"]
            hba += ["hostssl all all 0.0.0.0/0 scram-sha-256", "hostnossl all all 0.0.0.0/0 reject"]
        else:
            hba += ["host all all 0.0.0.0/0 scram-sha-256"]
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        (self.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        """A conninfo string for the superuser over the private socket."""
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def sql(self, statement: str, dbname: str = "postgres", params: Optional[tuple[Any, ...]] = None) -> list[tuple[Any, ...]]:
        """Run one statement as superuser (autocommit); its rows, if any."""
        import psycopg

        with psycopg.connect(self.superuser_conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str, owner: str = SUPERUSER) -> None:
        """CREATE DATABASE `name`."""
        self.sql(f'CREATE DATABASE "{name}" OWNER "{owner}"')

    def create_login(self, role: str, password: str, *member_of: str) -> None:
        """A role that logs in with a password, member of `member_of`."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.superuser_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            for group in member_of:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))

    def uri(self, user: str, dbname: str, host: Optional[str] = None) -> str:
        """A libpq URI as a Pi has it in BANC_LAB_DB: no password (that comes from a password file)."""
        target = host or self.host
        base = f"postgresql://{quote(user)}@{target}:{self.port}/{quote(dbname)}"
        if self.tls and self.ca_file is not None:
            return f"{base}?sslmode=verify-full&sslrootcert={quote(str(self.ca_file))}"
        return f"{base}?sslmode=disable"

    def write_passfile(self, path: Path, user: str, password: str, dbname: str = "*") -> Path:
        """A libpq password file (mode 0600) holding `user`'s password for this server."""
        path.parent.mkdir(parents=True, exist_ok=True)
        hosts = {self.host, *self.cert_hosts}
        text = "".join(f"{h}:{self.port}:{dbname}:{user}:{password}\n" for h in sorted(hosts))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    def stop(self) -> None:
        """Stop the server (smart shutdown, then kill after 10 s)."""
        terminate(self.proc, 10.0)

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
