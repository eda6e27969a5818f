"""Regenerate the hostile-payload corpus: ``python tests/data/hostile/generate.py``.

Each case is one file holding the exact payload bytes, listed in ``index.json`` with the MQTT
topic to publish it on and the dead-letter reason the bridge must give. The bridge tests (unit
and integration) and the reliability suite replay it. Topics use device ``hostile-1`` (valid id)
unless the case is about the id itself. Timestamps are fixed instants in the valid range.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEV = "hostile-1"
NATIVE = f"sensors/{DEV}/telemetry"
SENML = f"sensors/{DEV}/senml"
TASMOTA = f"tele/{DEV}/SENSOR"
SQL_ID = "x' OR '1'='1"
GOOD = {
    "device_id": DEV,
    "ts": "2026-01-15T10:00:00.000Z",
    "seq": 1,
    "temperature": 21.5,
    "humidity": 45.0,
    "co2": 600,
    "pressure": 1013.2,
    "battery": 88.0,
    "lat": 45.76,
    "lon": 4.84,
    "status": "OK",
}


def native(**changes: object) -> bytes:
    obj = {**GOOD, **changes}
    for k in [k for k, v in changes.items() if v is Ellipsis]:
        del obj[k]
    return json.dumps(obj, separators=(",", ":")).encode()


def raw_native(fragment: str) -> bytes:
    """GOOD with the temperature value replaced by a raw JSON fragment (for NaN & co)."""
    return native(temperature=0.0).replace(b'"temperature":0.0', f'"temperature":{fragment}'.encode())


TASMOTA_GOOD = {
    "Time": "2026-01-15T10:00:00",
    "BME280": {"Temperature": 21.4, "Humidity": 45.2, "Pressure": 1013.2},
}

CASES: list[tuple[str, str, bytes, str, str]] = [
    # name, topic, payload, reason, why
    ("too_large_padded", NATIVE, native(pad="x" * 5000), "too_large", "valid reading padded past 4 KiB"),
    ("too_large_10k_garbage", NATIVE, b"A" * 10_000, "too_large", "size is checked before parsing"),
    ("utf8_bad_start_bytes", NATIVE, b"\xff\xfe" + native(), "invalid_utf8", "UTF-16 BOM bytes"),
    (
        "utf8_overlong",
        NATIVE,
        native(status="OK").replace(b'"OK"', b'"\xc0\xaf"'),
        "invalid_utf8",
        "overlong encoding",
    ),
    (
        "utf8_surrogate",
        NATIVE,
        native().replace(b'"OK"', b'"\xed\xa0\x80"'),
        "invalid_utf8",
        "encoded lone surrogate",
    ),
    ("utf8_truncated", NATIVE, native()[:-3] + b"\xe2\x82", "invalid_utf8", "multi-byte char cut short"),
    ("json_empty", NATIVE, b"", "invalid_json", "zero-length payload"),
    ("json_open_brace", NATIVE, b"{", "invalid_json", "truncated object"),
    ("json_nan", NATIVE, raw_native("NaN"), "invalid_json", "NaN is not JSON"),
    ("json_infinity", NATIVE, raw_native("Infinity"), "invalid_json", "Infinity is not JSON"),
    ("json_neg_infinity", NATIVE, raw_native("-Infinity"), "invalid_json", "-Infinity is not JSON"),
    ("json_trailing_comma", NATIVE, native()[:-1] + b",}", "invalid_json", "trailing comma"),
    ("json_single_quotes", NATIVE, b"{'device_id':'hostile-1'}", "invalid_json", "single quotes"),
    ("json_deep_nesting", NATIVE, b"[" * 4000, "invalid_json", "recursion bomb"),
    ("json_plain_text", NATIVE, b"hello world", "invalid_json", "not JSON at all"),
    ("json_two_objects", NATIVE, native() + native(), "invalid_json", "concatenated objects"),
    ("schema_array", NATIVE, b"[1,2,3]", "schema", "array instead of object"),
    ("schema_string", NATIVE, b'"hello"', "schema", "JSON string"),
    ("schema_null", NATIVE, b"null", "schema", "JSON null"),
    ("schema_no_device_id", NATIVE, native(device_id=...), "schema", "device_id missing"),
    ("schema_device_id_number", NATIVE, native(device_id=42), "schema", "device_id not a string"),
    ("schema_no_seq", NATIVE, native(seq=...), "schema", "seq missing"),
    ("schema_seq_string", NATIVE, native(seq="5"), "schema", "seq as a string"),
    ("schema_seq_bool", NATIVE, native(seq=True), "schema", "booleans are not integers"),
    ("schema_seq_float", NATIVE, native(seq=1.5), "schema", "seq not integral"),
    ("schema_no_ts", NATIVE, native(ts=...), "schema", "ts missing"),
    ("schema_ts_no_offset", NATIVE, native(ts="2026-01-15T10:00:00"), "schema", "ts without UTC offset"),
    ("schema_ts_garbage", NATIVE, native(ts="yesterday"), "schema", "ts not RFC 3339"),
    ("schema_temp_string", NATIVE, native(temperature="21.5"), "schema", "number as string"),
    ("schema_temp_bool", NATIVE, native(temperature=True), "schema", "boolean as number"),
    ("schema_status_unknown", NATIVE, native(status="BROKEN"), "schema", "status not an enum value"),
    ("schema_fault_unknown", NATIVE, native(fault="gremlins"), "schema", "fault not a fault code"),
    ("schema_bad_id_chars", "sensors/bad id!/telemetry", native(device_id="bad id!"), "schema", "id pattern"),
    ("range_temp_500", NATIVE, native(temperature=500), "out_of_range", "above 150 °C"),
    ("range_humidity_neg", NATIVE, native(humidity=-5), "out_of_range", "below 0 %RH"),
    ("range_seq_negative", NATIVE, native(seq=-1), "out_of_range", "negative seq"),
    ("range_seq_huge", NATIVE, native(seq=2**64), "out_of_range", "seq above 2^63-1"),
    ("range_ts_1999", NATIVE, native(ts="1999-12-31T23:59:59.000Z"), "out_of_range", "before 2000"),
    ("range_ts_2100", NATIVE, native(ts="2100-01-01T00:00:00.000Z"), "out_of_range", "far future"),
    ("range_lat_95", NATIVE, native(lat=95.0), "out_of_range", "latitude beyond the pole"),
    ("range_co2_1e9", NATIVE, native(co2=1e9), "out_of_range", "absurd CO2"),
    ("id_mismatch", NATIVE, native(device_id="someone-else"), "id_mismatch", "payload id differs from topic"),
    (
        "senml_object",
        SENML,
        b'{"bn":"urn:dev:mac:0024befffe804ff1:","n":"temp","u":"Cel","v":21}',
        "unsupported_format",
        "object, not a pack",
    ),
    (
        "senml_only_volts",
        SENML,
        b'[{"bn":"dev:","n":"supply","u":"V","v":3.3}]',
        "unsupported_format",
        "no mappable unit",
    ),
    (
        "senml_must_understand",
        SENML,
        b'[{"n":"temp","u":"Cel","v":21,"t":1768471200,"foo_":1}]',
        "unsupported_format",
        "unknown must-understand field",
    ),
    (
        "senml_value_string",
        SENML,
        b'[{"n":"temp","u":"Cel","v":"21","t":1768471200}]',
        "schema",
        "v must be a number",
    ),
    ("senml_nan", SENML, b'[{"n":"temp","u":"Cel","v":NaN,"t":1768471200}]', "invalid_json", "NaN in a pack"),
    ("senml_temp_300", SENML, b'[{"n":"temp","u":"Cel","v":300,"t":1768471200}]', "out_of_range", "300 °C"),
    (
        "tasmota_no_known_block",
        TASMOTA,
        b'{"Time":"2026-01-15T10:00:00","ANALOG":{"A0":512}}',
        "unsupported_format",
        "no sensor block we know",
    ),
    (
        "tasmota_temp_unit_k",
        TASMOTA,
        json.dumps({**TASMOTA_GOOD, "TempUnit": "K"}).encode(),
        "unsupported_format",
        "unknown TempUnit",
    ),
    (
        "tasmota_no_time",
        TASMOTA,
        json.dumps({"BME280": TASMOTA_GOOD["BME280"]}).encode(),
        "schema",
        "Time missing",
    ),
    (
        "tasmota_pressure_5000",
        TASMOTA,
        json.dumps({**TASMOTA_GOOD, "BME280": {"Pressure": 5000}}).encode(),
        "out_of_range",
        "5000 hPa",
    ),
    ("tasmota_array", TASMOTA, b"[]", "unsupported_format", "array instead of object"),
    # --- reliability suite (issue 9): injection, control characters, spoofing, time, odd JSON
    ("sql_device_id", NATIVE, native(device_id=SQL_ID), "schema", "SQL in device_id"),
    ("sql_device_id_in_topic", f"sensors/{SQL_ID}/telemetry", native(device_id=SQL_ID), "schema", "both ids"),
    ("sql_status", NATIVE, native(status="OK'; DELETE FROM devices; --"), "schema", "SQL in status"),
    ("sql_fault", NATIVE, native(fault="stuck'); DROP TABLE sensor_alerts; --"), "schema", "SQL in fault"),
    ("sql_ts", NATIVE, native(ts="2026-01-15T10:00:00Z'; DROP TABLE x; --"), "schema", "SQL after a ts"),
    ("ctrl_device_id_newline", NATIVE, native(device_id=f"{DEV}\n"), "schema", "trailing newline in id"),
    ("ctrl_device_id_nul", NATIVE, native(device_id=f"{DEV}\u0000"), "schema", "NUL in id"),
    ("ctrl_device_id_ansi", NATIVE, native(device_id=f"\u001b[31m{DEV}"), "schema", "ANSI escape in id"),
    ("ctrl_status_nul", NATIVE, native(status="OK\u0000"), "schema", "NUL after a valid status"),
    (
        "ctrl_raw_byte_in_string",
        NATIVE,
        native().replace(b'"OK"', b'"O\x01K"'),
        "invalid_json",
        "unescaped control byte inside a string",
    ),
    ("spoof_uppercase_id", NATIVE, native(device_id=DEV.upper()), "id_mismatch", "ids are case-sensitive"),
    (
        "spoof_duplicate_key",
        NATIVE,
        native()[:-1] + b',"device_id":"victim-1"}',
        "id_mismatch",
        "second device_id key names another device",
    ),
    ("spoof_empty_topic_id", "sensors//telemetry", native(), "id_mismatch", "empty id level in the topic"),
    ("time_year_0001", NATIVE, native(ts="0001-01-01T00:00:00.000Z"), "out_of_range", "year 1"),
    ("time_year_9999", NATIVE, native(ts="9999-12-31T23:59:59.999Z"), "out_of_range", "year 9999"),
    ("time_epoch_number", NATIVE, native(ts=1768471200), "schema", "epoch seconds instead of RFC 3339"),
    ("json_number_overflow", NATIVE, raw_native("1e400"), "invalid_json", "1e400 parses as infinity"),
    (
        "json_single_quotes_full",
        NATIVE,
        native().replace(b'"', b"'"),
        "invalid_json",
        "a whole reading in single quotes",
    ),
    ("json_utf8_bom", NATIVE, b"\xef\xbb\xbf" + native(), "invalid_json", "UTF-8 byte order mark"),
    ("schema_status_list", NATIVE, native(status=["OK"]), "schema", "status as a list"),
    ("schema_fault_object", NATIVE, native(fault={"kind": "stuck"}), "schema", "fault as an object"),
    ("schema_device_id_object", NATIVE, native(device_id={"id": DEV}), "schema", "device_id as an object"),
    ("range_lon_minus_181", NATIVE, native(lon=-181.0), "out_of_range", "longitude beyond -180"),
    ("range_battery_101", NATIVE, native(battery=101.0), "out_of_range", "battery above 100 %"),
]


def main() -> None:
    for old in HERE.glob("*.bin"):
        old.unlink()
    index = []
    for name, topic, payload, reason, why in CASES:
        (HERE / f"{name}.bin").write_bytes(payload)
        index.append({"file": f"{name}.bin", "topic": topic, "reason": reason, "why": why})
    (HERE / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(index)} cases written to {HERE}")


if __name__ == "__main__":
    main()
