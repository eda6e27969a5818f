"""The raw flow's plan on a small DataFrame: one reading line per valid record, one alert line per
fired rule, one reject line per rejected record; and a plan Spark runs as generated code."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from stream_data import CASES, kafka_df, reading

from fleetsim.cloud.streaming.executor_sink import KIND_ALERT, KIND_READING, KIND_REJECT
from fleetsim.cloud.streaming.flows import raw_lines
from fleetsim.cloud.streaming.pgsink import RAW_COPY_COLUMNS
from fleetsim.cloud.streaming.rules import STAGE_ALERT_COLUMNS
from fleetsim.kernel.config import AlertsConfig

pytestmark = pytest.mark.spark


def _fields(line: str) -> list[str]:
    return next(csv.reader(io.StringIO(line)))


def _lines(spark: Any) -> Any:
    payloads = [reading("d1", seq=i, **kw) for i, (kw, _) in enumerate(CASES)] + [b"{oops"]
    return raw_lines(kafka_df(spark, payloads), AlertsConfig(), keep_partition=True)


def test_a_line_per_reading_per_fired_rule_and_per_reject(spark: Any) -> None:
    rows = _lines(spark).collect()
    seq_at, kind_at = STAGE_ALERT_COLUMNS.index("seq"), STAGE_ALERT_COLUMNS.index("kind")
    readings = [_fields(r.line) for r in rows if r.kind == KIND_READING]
    assert sorted(int(f[RAW_COPY_COLUMNS.index("seq")]) for f in readings) == list(range(len(CASES)))
    assert all(r.day is not None and r.kafka_partition == 0 for r in rows if r.kind == KIND_READING)
    fired: dict[int, set[str]] = {i: set() for i in range(len(CASES))}
    for r in rows:
        if r.kind == KIND_ALERT:
            f = _fields(r.line)
            fired[int(f[seq_at])].add(f[kind_at])
            assert r.day is None and r.line.endswith("\n")
    assert fired == {i: {k for k, *_ in expected} for i, (_, expected) in enumerate(CASES)}
    rejects = [r for r in rows if r.kind == KIND_REJECT]
    assert len(rejects) == 1 and "invalid_json" in rejects[0].line
    assert len(rows) == len(CASES) + sum(len(e) for _, e in CASES) + 1


def test_the_lines_are_made_in_generated_code(spark: Any) -> None:
    """Higher-order functions (the alerts' filter and transform) are evaluated row by row outside
    Spark's generated code, and so was everything under ``inline`` when they were part of its
    argument: the generator must stay inside a code-generated stage."""
    plan = _lines(spark)._jdf.queryExecution().executedPlan().toString()
    generate = [ln for ln in plan.splitlines() if "Generate inline(" in ln]
    assert generate and all(ln.lstrip(" +-:").startswith("*(") for ln in generate), plan
