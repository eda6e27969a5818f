"""A private CA and a server certificate for Mosquitto's TLS listener (remote devices).

Generated with the ``openssl`` command (always present on Debian: ``openssl`` is a dependency of
``ca-certificates``) instead of the ``cryptography`` package: it is a handful of calls made once
per run directory, and it keeps a dependency (and its wheels) out of the project.

Layout under ``<run_dir>/tls/``: ``ca.crt`` (give this to devices), ``ca.key`` (0600, never
leaves the machine), ``server.crt`` + ``server.key`` (readable by the broker's OS user only),
``server.names`` (the subjectAltName entries the certificate was made for). The CA is reused for
the life of the run directory so devices keep trusting it; the server certificate is re-issued
when the names change (e.g. another ``--listen`` address) or when it is within 30 days of expiry.

RSA 2048 rather than ECDSA: the oldest TLS stacks found on sensors (ESP8266 BearSSL in Tasmota,
some MicroPython ports) handle it everywhere; the handshake cost is paid once per connection.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.errors import StackError
from fleetsim.stack import process
from fleetsim.stack.base import require_binary

SERVICE_USER = "mosquitto"
CA_DAYS = 3650
"""Validity of the generated CA, in days."""
SERVER_DAYS = 825
"""Validity of the server certificate, in days (the CA/Browser Forum maximum many clients enforce)."""
RENEW_BEFORE_S = 30 * 86_400
"""Re-issue the server certificate when it expires within this many seconds."""
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of the generated material."""

    ca_cert: Path
    """CA certificate (PEM): what devices use to verify the broker."""
    ca_key: Path
    """CA private key (PEM, 0600)."""
    server_cert: Path
    """Broker certificate (PEM), signed by the CA."""
    server_key: Path
    """Broker private key (PEM), readable by the broker's OS user only."""


def tls_dir(cfg: FleetsimConfig) -> Path:
    return cfg.run_dir / "tls"


def files(cfg: FleetsimConfig) -> TlsFiles:
    d = tls_dir(cfg)
    return TlsFiles(cfg.mqtt.ca_file or d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key")


def tls_enabled(cfg: FleetsimConfig) -> bool:
    """True when the configuration asks for the TLS listener (``mqtt.listen`` / ``up --listen``)."""
    return bool(cfg.mqtt.listen.strip())


def public_host(cfg: FleetsimConfig, listen: str | None = None) -> str:
    """The host name devices should use for the TLS listener: the first ``mqtt.tls_names`` entry,
    else the listen address, else (wildcard listen) this machine's name."""
    if cfg.mqtt.tls_names:
        return cfg.mqtt.tls_names[0]
    listen = (cfg.mqtt.listen if listen is None else listen).strip()
    if listen not in WILDCARDS:
        return listen
    return socket.getfqdn()


def server_names(cfg: FleetsimConfig) -> list[str]:
    """subjectAltName entries, e.g. ``["IP:127.0.0.2", "DNS:localhost"]``, deterministic order."""
    raw: list[str] = list(cfg.mqtt.tls_names)
    listen = cfg.mqtt.listen.strip()
    if listen and listen not in WILDCARDS:
        raw.append(listen)
    else:
        raw += [socket.gethostname(), socket.getfqdn()]
    raw += ["localhost", "127.0.0.1"]
    out: list[str] = []
    for raw_name in raw:
        name = raw_name.strip().strip("[]")
        if not name:
            continue
        try:
            entry = f"IP:{ipaddress.ip_address(name)}"
        except ValueError:
            entry = f"DNS:{name}"
        if entry not in out:
            out.append(entry)
    return out


def _openssl(args: list[str], what: str) -> str:
    return process.run_checked([require_binary("openssl", "openssl"), *args], what, timeout_s=60.0)


def _give_to_broker(path: Path, mode: int) -> None:
    os.chmod(path, mode)
    if process.is_root():
        _, gid = process.user_ids(SERVICE_USER)
        os.chown(path, 0, gid)


def _ensure_ca(f: TlsFiles) -> bool:
    if f.ca_cert.is_file() and f.ca_key.is_file():
        return False
    if f.ca_cert.is_file() != f.ca_key.is_file():
        raise StackError(
            f"TLS: found only one of {f.ca_cert} and {f.ca_key}; remove the other (devices trusting "
            "the old CA must then be given the new ca.crt) or restore it"
        )
    f.ca_key.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        _openssl(
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                "-keyout", str(f.ca_key), "-out", str(f.ca_cert), "-days", str(CA_DAYS),
                "-subj", f"/CN=Fleetsim local CA {os.urandom(4).hex()}",
                "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ],
            "generating the TLS CA",
        )  # fmt: skip
    finally:
        os.umask(old)
    os.chmod(f.ca_key, 0o600)
    os.chmod(f.ca_cert, 0o644)
    return True


def _server_current(f: TlsFiles, names: list[str], names_file: Path) -> bool:
    if not (f.server_cert.is_file() and f.server_key.is_file() and names_file.is_file()):
        return False
    if names_file.read_text(encoding="utf-8").split() != names:
        return False
    try:
        _openssl(["x509", "-checkend", str(RENEW_BEFORE_S), "-noout", "-in", str(f.server_cert)], "check")
        _openssl(["verify", "-CAfile", str(f.ca_cert), str(f.server_cert)], "verify")
    except StackError:
        return False
    return True


def _issue_server(f: TlsFiles, names: list[str], names_file: Path) -> None:
    cn = names[0].split(":", 1)[1]
    old = os.umask(0o077)
    try:
        with tempfile.TemporaryDirectory(dir=f.server_key.parent) as tmp:
            key, csr, ext = Path(tmp) / "k.pem", Path(tmp) / "r.csr", Path(tmp) / "ext.cnf"
            ext.write_text(
                f"subjectAltName={','.join(names)}\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                encoding="ascii",
            )
            if f.server_key.is_file():
                # Keep the key across re-issues: devices that pin the server's public key (Tasmota's
                # SetOption132 fingerprint mode) keep working when names or expiry force a new cert.
                key.write_bytes(f.server_key.read_bytes())
            else:
                _openssl(
                    ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
                    "key",
                )
            _openssl(["req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr)], "CSR")
            crt = Path(tmp) / "c.pem"
            _openssl(
                [
                    "x509", "-req", "-in", str(csr), "-CA", str(f.ca_cert), "-CAkey", str(f.ca_key),
                    "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-sha256",
                    "-days", str(SERVER_DAYS), "-extfile", str(ext), "-out", str(crt),
                ],
                "signing the TLS server certificate",
            )  # fmt: skip
            _give_to_broker(key, 0o640)
            _give_to_broker(crt, 0o644)
            os.replace(key, f.server_key)
            os.replace(crt, f.server_cert)
    finally:
        os.umask(old)
    names_file.write_text("\n".join(names) + "\n", encoding="utf-8")


def ensure_tls(cfg: FleetsimConfig) -> TlsFiles:
    """Create the CA (once) and a current server certificate for the configured names."""
    f = files(cfg)
    d = tls_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    # The broker's group must reach server.*; ca.key stays 0600 root, so listing names is harmless.
    os.chmod(d, 0o750)  # noqa: S103
    if process.is_root():
        _, gid = process.user_ids(SERVICE_USER)
        os.chown(d, 0, gid)
        process.grant_traverse(d.parent)
    new_ca = _ensure_ca(f)
    names = server_names(cfg)
    names_file = d / "server.names"
    if new_ca or not _server_current(f, names, names_file):
        _issue_server(f, names, names_file)
    return f


def listener_lines(cfg: FleetsimConfig, f: TlsFiles) -> list[str]:
    """``mosquitto.conf`` lines of the TLS listener (global auth settings apply to it as well)."""
    listen = cfg.mqtt.listen.strip()
    return [
        f"listener {cfg.mqtt.tls_port} {listen}",
        f"certfile {f.server_cert}",
        f"keyfile {f.server_key}",
        "tls_version tlsv1.2",
    ]


def configured_listener(cfg: FleetsimConfig) -> tuple[str, int] | None:
    """``(address, port)`` of the TLS listener in the broker's generated config, if it has one.

    ``fleetsim up --listen`` is a start-time option, so later commands (``fleetsim device add``)
    read what the running broker was actually configured with rather than their own config.
    """
    if tls_enabled(cfg):
        return cfg.mqtt.listen.strip(), cfg.mqtt.tls_port
    conf = cfg.run_dir / "mosquitto" / "mosquitto.conf"
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    current: tuple[str, int] | None = None
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "listener":
            current = (parts[2] if len(parts) > 2 else "", int(parts[1]))
        elif parts[:1] == ["certfile"] and current is not None:
            return current
    return None
