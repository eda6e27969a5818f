"""The end-to-end benchmark's CPU budget table: each stage against its share of 200 µs/msg."""

from __future__ import annotations

from fleetsim.bench import report
from fleetsim.bench.budget import BUDGET_US, LOADGEN, after_soak_figure, cpu_table, holder, settled_figure


def _ramp(mode: str, cpu: dict[str, float], passed: bool = True) -> dict[str, object]:
    step = {"rate_target_msg_s": 5000, "cpu_us_per_msg": cpu, "passed": passed}
    return {"mode": mode, "steps": [step], "best": step if passed else None}


def test_budget_shares_sum_to_the_machine_at_10k_msg_s() -> None:
    # 2 cores = 2,000,000 µs of CPU per second; at 10,000 msg/s that is 200 µs per message.
    assert sum(BUDGET_US.values()) == 200.0


def test_cpu_table_names_the_stages_over_their_share_and_keeps_the_load_generator_apart() -> None:
    ext = _ramp("external 100 devices", {"spark": 90.0, "bridge": 10.0, LOADGEN: 4.0})
    sim = _ramp("sim 100 devices", {"spark": 40.0, "simulator": 70.0}, passed=False)
    table, over = cpu_table([ext, sim])
    rows = {row[0]: row for row in table["rows"]}
    assert rows["spark"][1:] == [60.0, 90.0, 40.0, "over in external 100 devices"]
    assert rows["simulator"][-1] == "over in sim 100 devices"
    assert rows["bridge"][-1] == "within"
    assert rows[LOADGEN][-1] == "outside the budget"
    # The load generator is not part of the pipeline's total.
    assert rows["total (all but the load generator)"][2:4] == [100.0, 110.0]
    assert over == [
        "simulator over its 50 µs/msg share in: sim 100 devices",
        "spark over its 60 µs/msg share in: external 100 devices",
    ]
    text = report.render_bench("e2e", {"status": "ok", "result": {"title": "E2E", "tables": [table]}})
    assert "| spark | 60.0 | 90.0 | 40.0 | over in external 100 devices |" in text


def _rest_step(spark_us: float, rate: float, lost: int = 0) -> dict[str, object]:
    return {"rate_target_msg_s": 100, "rate_achieved_msg_s": rate, "published": int(rate * 180),
            "lost": lost, "cpu_us_per_msg": {"spark": spark_us}}  # fmt: skip


def test_settled_figure_turns_microseconds_a_message_into_cores_beside_the_ramps_first_step() -> None:
    ramp = {"steps": [_rest_step(2423.0, 100.0), {**_rest_step(400.0, 1000.0), "rate_target_msg_s": 1000}]}
    fig = settled_figure(_rest_step(1631.0, 100.0), ramp)
    assert (fig["value"], fig["baseline"], fig["met"]) == (0.1631, 0.2423, True)
    assert fig["unit"] == "core"


def test_settled_figure_misses_over_the_target_or_with_a_loss() -> None:
    assert settled_figure(_rest_step(2100.0, 100.0), {"steps": []})["met"] is False
    just_over = settled_figure(_rest_step(2004.4, 100.0), {"steps": []})  # 0.2004 core
    assert (just_over["value"], just_over["met"]) == (0.2004, False)
    lossy = settled_figure(_rest_step(1000.0, 100.0, lost=3), {"steps": []})
    assert lossy["met"] is False and "baseline" not in lossy


def test_settled_figure_names_the_busiest_spark_threads_when_profiled() -> None:
    profiled = {
        **_rest_step(2290.0, 100.0),
        "cpu_profile_cores": {"spark": {"Executor task l": 0.06, "python": 0.05, "C2 CompilerThreN": 0.04,
                                        "GC Thread#N": 0.01, "VM Thread": 0.005}},
    }  # fmt: skip
    name = settled_figure(profiled, {"steps": []})["name"]
    assert name.endswith(
        "busiest threads: Executor task l 0.060, python 0.050, C2 CompilerThreN 0.040, GC Thread#N 0.010)"
    )
    assert "busiest" not in settled_figure(_rest_step(2290.0, 100.0), {"steps": []})["name"]


def test_rest_figures_say_how_much_windowed_state_the_step_carried() -> None:
    # The state's gauge is read as the step starts and once it has drained; a step whose endpoint
    # did not answer shows no state rather than a wrong one.
    step = {**_rest_step(1500.0, 100.0), "state_rows": [612_345, 431_000]}
    assert "windowed state 612,345 -> 431,000 rows" in settled_figure(step, {"steps": []})["name"]
    unknown = {**_rest_step(1500.0, 100.0), "state_rows": [None, 431_000]}
    assert "windowed state" not in settled_figure(unknown, {"steps": []})["name"]


def test_after_soak_figure_is_reported_beside_the_judged_one_not_judged_against_the_target() -> None:
    step = {**_rest_step(2403.0, 100.0), "state_rows": [3_100_000, 2_200_000]}
    fig = after_soak_figure(step, 5000)
    assert (fig["value"], fig["target"], fig["met"]) == (0.2403, "report", True)
    assert "after the soak at 5,000 msg/s" in fig["name"] and "3,100,000 -> 2,200,000" in fig["name"]
    assert after_soak_figure({**step, "lost": 2}, 5000)["met"] is False


def test_a_failing_step_names_the_hop_and_the_stages_that_hold_it() -> None:
    q = lambda p95: {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.1}  # noqa: E731
    step = {
        "latency": {"event_to_row_s": q(10.7), "device_to_bridge_s": q(0.16), "bridge_to_kafka_s": q(0.0),
                    "kafka_to_row_s": q(10.69)},
        "cpu_us_per_msg": {"spark": 54.4, "postgres": 35.8, "bridge": 25.7, "kafka": 14.9, LOADGEN: 80.0},
    }  # fmt: skip
    assert holder(step) == (
        "held by Kafka -> Spark -> PostgreSQL (p95 10.69 s); "
        "over their CPU share: postgres 35.8/20 µs/msg, bridge 25.7/25 µs/msg"
    )
    step["latency"]["device_to_bridge_s"] = q(12.0)
    step["cpu_us_per_msg"] = {"spark": 30.0}
    assert holder(step) == "held by load -> Mosquitto -> bridge (p95 12.00 s)"
