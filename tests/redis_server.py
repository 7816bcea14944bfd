"""A real redis-server on loopback for the tests (Debian's package; .ci/run installs it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, for a TLS redis-server (the certificate is its own CA)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = workdir / "redis-cert.pem", workdir / "redis-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class RedisServer:
    def __init__(self, workdir: Path, *, tls: bool = False, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it)")
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        listen = ["--port", str(self.port)]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.ca_cert: Path | None = None
        if tls:
            self.ca_cert, key = self_signed_cert(workdir)
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.ca_cert), "--tls-key-file", str(key),
                      "--tls-auth-clients", "no"]
            self.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_cert}"
        if password:
            listen += ["--requirepass", password]
            self.url = self.url.replace("://", f"://:{password}@", 1)
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", *listen, "--save", "", "--appendonly", "no", "--dir", str(workdir),
             "--latency-monitor-threshold", "50", "--protected-mode", "yes", "--enable-protected-configs", "local", "--logfile", str(workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start: {(workdir / 'redis.log').read_text()[-500:]}") from None
                time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def reset(self) -> None:
        """A clean server for the next test: no keys, default limits, fresh counters."""
        client = self.client()
        client.flushall(asynchronous=False)
        # a test that fragmented the heap leaves resident memory behind; without a purge the next test's
        # empty server would rightly report redis.fragmentation
        for _ in range(40):
            client.execute_command("MEMORY", "PURGE")
            memory = client.info("memory")
            if int(memory["used_memory_rss"]) - int(memory["used_memory"]) < 16 << 20:
                break
            time.sleep(0.05)
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("dir", str(self.workdir))
        if client.info("persistence")["rdb_last_bgsave_status"] != "ok":  # a test broke saving: save once, properly
            client.bgsave()
            while client.info("persistence")["rdb_bgsave_in_progress"]:
                time.sleep(0.02)
        client.config_resetstat()
        client.slowlog_reset()
        client.execute_command("LATENCY", "RESET")
        client.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
