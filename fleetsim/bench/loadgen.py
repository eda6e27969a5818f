"""External load generator for the end-to-end benchmark: paced QoS 1 readings over bare MQTT sockets.

The simulator costs tens of µs per message (physics, SimPy, paho); measuring the pipeline's own
capacity needs a load that costs next to nothing, so its CPU does not starve the stages it loads on
the same two cores. This speaks just enough MQTT 3.1.1 (CONNECT, PUBLISH QoS 1, PUBACK) to push
contract readings (:func:`~fleetsim.kernel.contract.encode_reading`, the same bytes the simulator
sends) as the simulator identity, a few µs each: packets are built from a per-device topic prefix
and written in one ``sendall`` per pacing slice. PUBACKs are counted per device, so the benchmark
compares what the broker acknowledged with what PostgreSQL stored, as the reliability checker does.

Run: ``python -m fleetsim.bench.loadgen --devices N --rate R --duration S --prefix P --out F``
with the configuration in ``FLEETSIM_*`` variables (``config_to_env``). Writes a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleetsim.chaos.mqtt_raw import mqtt_string, varint
from fleetsim.kernel.clients import mqtt_credentials
from fleetsim.kernel.config import FleetsimConfig, load_config
from fleetsim.kernel.contract import encode_reading, format_ts_ms, telemetry_topic
from fleetsim.kernel.errors import FleetsimError

SLICE_S = 0.005
"""Pacing slice: every 5 ms the due readings go out in one write (smooth at 100 msg/s and 20k)."""
MAX_INFLIGHT = 20_000
"""Unacknowledged PUBLISHes per connection before the sender waits (packet ids are 16-bit)."""


class LoadGenError(FleetsimError):
    """The load generator could not connect or lost its connection to the broker."""


def connect_packet(client_id: str, user: str, password: str, keepalive_s: int = 60) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, user name and password."""
    var = mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", keepalive_s)
    payload = mqtt_string(client_id) + mqtt_string(user) + mqtt_string(password)
    body = var + payload
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic_bytes: bytes, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH at QoS 1 (``topic_bytes`` already length-prefixed)."""
    n = len(topic_bytes) + 2 + len(payload)
    return b"\x32" + varint(n) + topic_bytes + struct.pack(">H", packet_id) + payload


@dataclass
class _Conn:
    sock: socket.socket
    inflight: dict[int, int] = field(default_factory=dict)
    """packet id -> device index, until its PUBACK."""
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    room: threading.Condition = field(init=False)
    error: str = ""
    closing: bool = False
    """Set before our own DISCONNECT: the broker's close after it is not an error."""

    def __post_init__(self) -> None:
        self.room = threading.Condition(self.lock)


class LoadGen:
    """``devices`` device ids ``<prefix>-NNNNNN`` sending ``rate`` readings/s in total for ``duration_s``."""

    def __init__(
        self, cfg: FleetsimConfig, prefix: str, devices: int, rate: float, duration_s: float, connections: int
    ) -> None:
        self.cfg, self.rate, self.duration_s = cfg, rate, duration_s
        self.ids = [f"{prefix}-{i:06d}" for i in range(devices)]
        self.topics = [mqtt_string(telemetry_topic(d)) for d in self.ids]
        self.seq_base = int(time.time() * 1000)
        self.sent = [0] * devices
        self.acked = [0] * devices
        self._acked_lock = threading.Lock()
        self.connections = max(1, connections)
        self._conns: list[_Conn] = []

    # ---------------------------------------------------------------------------- connection
    def _open(self, k: int) -> _Conn:
        user, password = mqtt_credentials(self.cfg, "sim")
        m = self.cfg.mqtt
        try:
            sock = socket.create_connection((m.host, m.port), timeout=10)
        except OSError as exc:
            raise LoadGenError(f"cannot reach the broker at {m.host}:{m.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(f"loadgen-{self.seq_base}-{k}", user, password))
        ack = sock.recv(4)
        if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
            raise LoadGenError(f"broker refused the connection (CONNACK {ack.hex() or 'none'})")
        sock.settimeout(None)
        conn = _Conn(sock)
        threading.Thread(target=self._reader, args=(conn,), daemon=True, name=f"puback-{k}").start()
        return conn

    def _reader(self, conn: _Conn) -> None:
        buf = b""
        sock = conn.sock
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError as exc:
                if not conn.closing:
                    conn.error = str(exc)
                break
            if not chunk:
                if not conn.closing:
                    conn.error = conn.error or "connection closed by the broker"
                break
            buf += chunk
            n = len(buf) - len(buf) % 4
            # A QoS 1 publisher receives only PUBACKs (4 bytes each) from the broker.
            done: list[int] = []
            with conn.lock:
                for i in range(0, n, 4):
                    if buf[i] != 0x40:
                        conn.error = f"unexpected packet type 0x{buf[i]:02x} from the broker"
                        break
                    dev = conn.inflight.pop((buf[i + 2] << 8) | buf[i + 3], None)
                    if dev is not None:
                        done.append(dev)
                conn.room.notify_all()
            buf = buf[n:]
            with self._acked_lock:
                for dev in done:
                    self.acked[dev] += 1
            if conn.error:
                break
        with conn.lock:
            conn.room.notify_all()

    # --------------------------------------------------------------------------------- pacing
    def run(self) -> None:
        self._conns = [self._open(k) for k in range(self.connections)]
        n_dev = len(self.ids)
        t0 = time.monotonic()
        total = int(self.rate * self.duration_s)
        i = 0
        while i < total:
            now = time.monotonic()
            due = min(total, int((now - t0) * self.rate) + 1)
            if due <= i:
                time.sleep(SLICE_S)
                continue
            ts = format_ts_ms(int(time.time() * 1000))
            per_conn: list[list[bytes]] = [[] for _ in self._conns]
            devs: list[list[int]] = [[] for _ in self._conns]
            for j in range(i, due):
                dev = j % n_dev
                seq = self.sent[dev]
                self.sent[dev] = seq + 1
                # Values wander a little per reading: constant values would trip the stuck rule.
                wobble = (seq * 7) % 11 / 10.0
                payload = encode_reading(
                    self.ids[dev], ts, self.seq_base + seq, 20.5 + wobble, 45.0 + wobble, 600.0 + 10 * wobble,
                    1013.0 + wobble, 90.0, 45.75, 4.85,
                )  # fmt: skip
                k = dev % len(self._conns)
                per_conn[k].append(payload)
                devs[k].append(dev)
            for k, conn in enumerate(self._conns):
                if per_conn[k]:
                    self._send(conn, per_conn[k], devs[k])
            i = due
        self._wait_acks(timeout_s=30.0)

    def _send(self, conn: _Conn, payloads: list[bytes], devs: list[int]) -> None:
        packets = []
        with conn.lock:
            while len(conn.inflight) + len(payloads) > MAX_INFLIGHT and not conn.error:
                conn.room.wait(1.0)
            if conn.error:
                raise LoadGenError(f"lost the broker: {conn.error}")
            pid = conn.next_id
            for payload, dev in zip(payloads, devs, strict=True):
                conn.inflight[pid] = dev
                packets.append(publish_packet(self.topics[dev], pid, payload))
                pid = pid + 1 if pid < 65535 else 1
            conn.next_id = pid
        conn.sock.sendall(b"".join(packets))

    def _wait_acks(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for conn in self._conns:
            with conn.lock:
                while conn.inflight and not conn.error and time.monotonic() < deadline:
                    conn.room.wait(0.2)
                conn.closing = True
            try:
                conn.sock.sendall(b"\xe0\x00")  # DISCONNECT
                conn.sock.close()
            except OSError:
                pass

    def summary(self) -> dict[str, object]:
        return {
            "devices": len(self.ids),
            "seq_base": self.seq_base,
            "sent": sum(self.sent),
            "acked": sum(self.acked),
            "unacked_devices": sum(1 for s, a in zip(self.sent, self.acked, strict=True) if s != a),
            "errors": [c.error for c in self._conns if c.error],
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fleetsim.bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--rate", type=float, required=True, help="readings per second, whole fleet")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--prefix", required=True, help="device id prefix")
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="JSON summary file")
    args = p.parse_args(argv)
    cfg = load_config(None)
    gen = LoadGen(cfg, args.prefix, args.devices, args.rate, args.duration, args.connections)
    try:
        gen.run()
    finally:
        args.out.write_text(json.dumps(gen.summary()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
