"""SQL on the ``devices`` table. Parameterized statements only; callers own the connection.

The writer role (``fleetsim_write``) may SELECT, INSERT and UPDATE ``devices`` but not DELETE:
devices are disabled, never erased, so their history in ``sensor_data`` keeps a registry row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg2.extras import execute_values

from fleetsim.kernel.errors import RegistryError
from fleetsim.registry.model import DeviceRecord


def _row_to_device(row: Sequence[Any]) -> DeviceRecord:
    # Column order of the SELECTs below = field order of DeviceRecord.
    return DeviceRecord(*row)


def get_device(conn: Any, device_id: str) -> DeviceRecord | None:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT device_id, name, kind, type, site, lat, lon, payload_format, interval_s, placed,
                   enabled,
                   created_at, updated_at
                  FROM devices WHERE device_id = %s""",
            (device_id,),
        )
        row = cur.fetchone()
    return _row_to_device(row) if row else None


def require_device(conn: Any, device_id: str) -> DeviceRecord:
    device = get_device(conn, device_id)
    if device is None:
        raise RegistryError(f"no device {device_id!r} in the registry (see `fleetsim device list`)")
    return device


def list_devices(
    conn: Any, *, kind: str | None = None, site: str | None = None, enabled: bool | None = None
) -> list[DeviceRecord]:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT device_id, name, kind, type, site, lat, lon, payload_format, interval_s, placed,
                   enabled,
                   created_at, updated_at
                  FROM devices
                 WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
                   AND (%(site)s::text IS NULL OR site = %(site)s)
                   AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s)
                 ORDER BY kind DESC, device_id""",
            {"kind": kind, "site": site, "enabled": enabled},
        )
        return [_row_to_device(r) for r in cur.fetchall()]


def insert_device(conn: Any, device: DeviceRecord) -> None:
    """Insert a new device; :class:`RegistryError` when the id exists (nothing is changed)."""
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO devices (device_id, name, kind, type, site, lat, lon, payload_format,
                                    interval_s, placed, enabled)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (device_id) DO NOTHING""",
            (
                device.device_id,
                device.name,
                device.kind,
                device.type,
                device.site,
                device.lat,
                device.lon,
                device.payload_format,
                device.interval_s,
                device.placed,
                device.enabled,
            ),
        )
        inserted = cur.rowcount == 1
    if not inserted:
        existing = get_device(conn, device.device_id)
        what = f"a {existing.kind} device" if existing else "a device"
        raise RegistryError(
            f"device {device.device_id!r} already exists ({what}); nothing changed. "
            f"Use `fleetsim device show {device.device_id}` or `rotate-credentials`."
        )


def set_enabled(conn: Any, device_id: str, enabled: bool) -> bool:
    """Enable or disable; True when the flag changed, :class:`RegistryError` for an unknown id."""
    with conn.cursor() as cur:
        cur.execute(
            """UPDATE devices SET enabled = %s, updated_at = now()
                WHERE device_id = %s AND enabled IS DISTINCT FROM %s""",
            (enabled, device_id, enabled),
        )
        changed = cur.rowcount == 1
    if not changed:
        require_device(conn, device_id)
    return changed


def place_device(conn: Any, device_id: str, *, site: str | None, lat: float, lon: float) -> None:
    """Give a device (typically an auto-registered, unplaced one) a location and a site."""
    with conn.cursor() as cur:
        cur.execute(
            """UPDATE devices SET lat = %s, lon = %s, site = coalesce(%s, site), placed = true,
                                  updated_at = now()
                WHERE device_id = %s""",
            (lat, lon, site, device_id),
        )
        if cur.rowcount != 1:
            raise RegistryError(f"no device {device_id!r} in the registry (see `fleetsim device list`)")


def upsert_simulated(conn: Any, rows: Iterable[DeviceRecord]) -> int:
    """Insert or update simulated devices from the fleet file; returns rows inserted or changed.

    Real devices are never overwritten by the fleet file (an id collision keeps the real one),
    except rows the bridge auto-registered (unplaced, named ``auto-registered``,
    :data:`fleetsim.bridge.registry_directory.AUTO_NAME`): those were
    simulated devices seen before seeding, and become what the fleet file says. ``enabled`` is
    left as the operator set it. Unchanged rows are not touched, so a restart with the
    same file writes nothing and ``updated_at`` keeps its meaning.
    """
    values = [
        (d.device_id, d.name, d.type, d.site, d.lat, d.lon, d.payload_format, d.interval_s, d.indoor)
        for d in rows
    ]
    if not values:
        return 0
    with conn.cursor() as cur:
        result = execute_values(
            cur,
            """INSERT INTO devices AS d (device_id, name, type, site, lat, lon, payload_format,
                                         interval_s, indoor, kind, placed)
               SELECT v.device_id, v.name, v.type, v.site, v.lat, v.lon, v.payload_format,
                      v.interval_s, v.indoor, 'simulated', true
                 FROM (VALUES %s) AS v (device_id, name, type, site, lat, lon, payload_format, interval_s,
                                        indoor)
               ON CONFLICT (device_id) DO UPDATE
                  SET name = EXCLUDED.name, type = EXCLUDED.type, site = EXCLUDED.site,
                      lat = EXCLUDED.lat, lon = EXCLUDED.lon, payload_format = EXCLUDED.payload_format,
                      interval_s = EXCLUDED.interval_s, indoor = EXCLUDED.indoor, placed = true,
                      kind = 'simulated',
                      updated_at = now()
                WHERE (d.kind = 'simulated' OR (NOT d.placed AND d.name = 'auto-registered'))  -- AUTO_NAME
                  AND (d.name, d.type, d.site, d.lat, d.lon, d.payload_format, d.interval_s, d.indoor,
                       d.placed)
                      IS DISTINCT FROM
                      (EXCLUDED.name, EXCLUDED.type, EXCLUDED.site, EXCLUDED.lat, EXCLUDED.lon,
                       EXCLUDED.payload_format, EXCLUDED.interval_s, EXCLUDED.indoor, true)
               RETURNING 1""",
            values,
            template=(
                "(%s, %s, %s, %s, %s::double precision, %s::double precision, %s, %s::double precision,"
                " %s::boolean)"
            ),
            page_size=1000,
            fetch=True,
        )
    return len(result)
