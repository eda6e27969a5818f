"""A reconnect storm: ~1,000 per-device MQTT sessions that drop and reconnect at once.

Raw sockets (:mod:`.mqtt_raw`) instead of 1,000 paho clients (a thread each). Each storm opens
every session (persistent: MQTT 5 session expiry), publishes one reading per device at QoS 1,
resets every connection at once (RST, as a dropped NAT or radio link looks to the broker), then
reconnects all of them at once and publishes one more reading each. The storm is a ground-truth
source like the publisher: it records what it sent and what the broker acknowledged.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

from fleetsim.chaos import mqtt_raw
from fleetsim.kernel.clients import mqtt_credentials
from fleetsim.kernel.config import FleetsimConfig
from fleetsim.kernel.contract import encode_reading, format_ts_ms

_PHASE_TIMEOUT_S = 60.0
"""A phase (connect all, ack all) may wait out an overlapping broker pause or restart."""


class ReconnectStorm:
    def __init__(self, cfg: FleetsimConfig, prefix: str, sessions: int = 1000) -> None:
        self.cfg = cfg
        self.devices = [f"{prefix}-{i:04d}" for i in range(sessions)]
        self.sent: dict[str, set[int]] = defaultdict(set)
        self.acked: dict[str, set[int]] = defaultdict(set)
        self.storms = 0
        self.figures: list[dict[str, float | int]] = []
        """Per storm: sessions connected, acked, failed, seconds taken."""
        self._lock = threading.Lock()

    def _open_all(self, seq: int) -> tuple[list[tuple[str, socket.socket]], int]:
        user, password = mqtt_credentials(self.cfg, "sim")
        opened: list[tuple[str, socket.socket]] = []
        failed = in_a_row = 0
        for dev in self.devices:  # CONNECT all first, then read the CONNACKs: "at once"
            if in_a_row >= 20:  # the broker is down or frozen: the rest would each wait 5 s
                break
            try:
                sock = socket.create_connection((self.cfg.mqtt.host, self.cfg.mqtt.port), timeout=5)
                sock.sendall(mqtt_raw.connect_packet(f"storm-{dev}", user, password, session_expiry_s=600))
                opened.append((dev, sock))
                in_a_row = 0
            except OSError:
                failed += 1
                in_a_row += 1
        ready: list[tuple[str, socket.socket]] = []
        deadline = time.monotonic() + _PHASE_TIMEOUT_S
        for dev, sock in opened:
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                kind, body = mqtt_raw.read_packet(sock)
                if kind != 0x20 or body[1] != 0:
                    raise ConnectionError(f"CONNACK {body[:2]!r}")
                ready.append((dev, sock))
            except OSError:
                failed += 1
                sock.close()
        ts = format_ts_ms(int(datetime.now(UTC).timestamp() * 1000))
        for dev, sock in ready:
            payload = encode_reading(dev, ts, seq, 21.2, 45.4, 606.0, 1013.0, 79.8, 45.76, 4.84)
            try:
                sock.sendall(mqtt_raw.publish_packet(f"sensors/{dev}/telemetry", 1, payload))
                with self._lock:
                    self.sent[dev].add(seq)
            except OSError:
                failed += 1
        acked = 0
        for dev, sock in ready:
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                while True:
                    kind, body = mqtt_raw.read_packet(sock)
                    if kind >> 4 == 4 and body[:2] == b"\x00\x01":
                        break
                if len(body) < 3 or body[2] < 0x80:
                    with self._lock:
                        self.acked[dev].add(seq)
                    acked += 1
            except OSError:
                failed += 1
        return ready, acked

    def run(self) -> dict[str, float | int]:
        """One storm (two rounds); returns its figures."""
        t0 = time.monotonic()
        base = 2 * self.storms
        self.storms += 1
        first, acked1 = self._open_all(base)
        for _dev, sock in first:  # drop every session at once: RST, no DISCONNECT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        second, acked2 = self._open_all(base + 1)
        for _dev, sock in second:
            with contextlib.suppress(OSError):
                sock.sendall(mqtt_raw.DISCONNECT)
            sock.close()
        fig: dict[str, float | int] = {
            "sessions": len(self.devices),
            "reconnected": len(second),
            "acked_before_drop": acked1,
            "acked_after_reconnect": acked2,
            "seconds": round(time.monotonic() - t0, 1),
        }
        self.figures.append(fig)
        return fig
