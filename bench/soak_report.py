"""The soak run's printed report, from its JSON report (``bench/soak.py`` writes both)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

MIB = 1024 * 1024


def _mib(value: float) -> str:
    return f"{value / MIB:,.2f} MiB"


def _per_million(value: float, tasks: int) -> str:
    return _mib(value * 1_000_000 / tasks) if tasks else "-"


def _run_lines(report: Mapping[str, Any]) -> list[str]:
    settings, figures = report["settings"], report["figures"]
    e2e, wait = figures["end_to_end_ms"], figures["queue_wait_ms"]
    lines = [
        f"soak: {settings['tasks']:,} tasks, {settings['workers']} workers (-P prefork -c "
        f"{settings['concurrency']}, prefetch multiplier {settings['prefetch_multiplier']}, "
        f"late acks), {settings['publishers']} publisher threads (backlog <= "
        f"{settings['max_backlog']:,}), wait_for_replicas={settings['wait_for_replicas']}, "
        f"heartbeat_timeout={settings['heartbeat_timeout']:g} s",
        f"  run: {report['run_seconds']:,.0f} s from the first publish to the last record "
        f"({figures['wall_seconds']:,.0f} s to the last first run); throughput "
        f"{figures['throughput_tasks_per_s'] or 0:,.0f} tasks/s; publish rate "
        f"{figures['publish_rate_per_s'] or 0:,.0f} msg/s; queues drained "
        f"{report['drained_after_s']:.1f} s after the last record",
        f"  end-to-end p50 / p99 / max: {e2e['p50'] or 0:,.0f} / {e2e['p99'] or 0:,.0f} / "
        f"{e2e['max'] or 0:,.0f} ms; queue wait p50 / p99: {wait['p50'] or 0:,.0f} / "
        f"{wait['p99'] or 0:,.0f} ms",
    ]
    kills = report["kills"]
    if kills:
        back = [k["restarted_at"] - k["at"] for k in kills]
        lines.append(f"  kills: {len(kills)} (SIGKILL to a worker's process group every "
                     f"{settings['kill_every']:g} s, round robin over workers 1-"
                     f"{settings['workers'] - settings['spare']}); the successor consumed "
                     f"{statistics.median(back):.1f} s (median) / {max(back):.1f} s (max) "
                     "after the kill")  # fmt: skip
    failover = report["failover"]
    if failover:
        lines.append(f"  failover: primary SIGKILLed; replica promoted after "
                     f"{failover['promoted_after_s']:.1f} s, old primary back as a replica in "
                     f"sync after {failover['replica_in_sync_after_s']:.1f} s")  # fmt: skip
    return lines


def _delivery_lines(found: Mapping[str, Any]) -> list[str]:
    causes = ", ".join(f"{cause} {count:,}" for cause, count in
                       found["duplicates_by_cause"].items())  # fmt: skip
    lines = [
        f"deliveries: {found['published']:,} published ({found['confirmed']:,} confirmed by a "
        f"replica, {found['unconfirmed_not_replicated']:,} NotReplicated), "
        f"{found['finished']:,} ran",
        f"  lost: {found['lost']:,} ({found['lost_confirmed']:,} confirmed, "
        f"{found['lost_unconfirmed']:,} NotReplicated)"
        + (f"; e.g. seq {found['lost_examples']}" if found["lost"] else ""),
        f"  duplicates: {found['duplicated_tasks']:,} tasks ran more than once "
        f"({found['duplicate_records']:,} extra runs): {causes}"
        + (
            f"; unexplained e.g. {found['unexplained_examples']}"
            if found["unexplained_examples"]
            else ""
        ),  # fmt: skip
    ]
    for seq, consumers in found["returned_from"].items():
        lines.append(f"    seq {seq} returned from consumer(s) {', '.join(consumers)}")
    return lines


def _rss_lines(found: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    lines = [f"worker RSS (main + pool processes, {settings['rss_measured_with']}, sampled every "
             f"{settings['sample_every']:g} s; after {settings['warmup']:g} s of warm-up from "
             "each start, to the worker's kill or the end):"]  # fmt: skip
    for row in found["incarnations"]:
        where = f"  worker {row['worker']} pid {row['pid']:>7} lived {row['lived_s']:>6.0f} s" + (
            " (killed)" if row["killed"] else ""
        )
        if "growth_percent" in row:
            where += (f": {_mib(row['rss_after_warmup_bytes'])} -> "
                      f"{_mib(row['rss_end_bytes'])} over {row['measured_over_s']:.0f} s = "
                      f"{row['growth_percent']:+.2f} %")  # fmt: skip
        else:
            where += ": too short to measure"
        lines.append(where)
    worst = found["worst_growth_percent"]
    lines.append(f"  worst growth {worst:+.2f} % (limit {found['limit_percent']:g} %)"
                 if worst is not None else "  nothing measured")  # fmt: skip
    return lines


def _redis_lines(report: Mapping[str, Any]) -> list[str]:
    lines = ["broker Redis memory (used_memory_dataset: used_memory less the server's overhead: "
             "client and replication buffers, backlog):"]  # fmt: skip
    for role, found in report["broker_memory"].items():
        base, after = found["baseline"], found["after_drain"]
        lines.append(
            f"  the {role} (:{found['port_before']} before, :{found['port_after']} at the end): "
            "dataset "
            f"{_mib(base['used_memory_dataset'])} before publishing -> "
            f"{_mib(after['used_memory_dataset'])} after the drain "
            f"({found['dataset_growth_bytes']:+,} bytes); used_memory "
            f"{_mib(base['used_memory'])} -> {_mib(after['used_memory'])}; keys "
            f"{base['keys']} -> {after['keys']}; clients {base['connected_clients']} -> "
            f"{after['connected_clients']}, pub/sub channels "
            f"{base['pubsub_channels_and_patterns']} -> {after['pubsub_channels_and_patterns']}"
        )
    keys = report["broker_keys"]
    before = report["baseline_keys"]
    lines.append(f"  keys under the run's prefix after the drain: {keys['total']}, "
                 f"{keys['bytes']:,} bytes (MEMORY USAGE); before publishing: "
                 f"{before['total']}, {before['bytes']:,} bytes")  # fmt: skip
    for kind, count in keys["by_kind"].items():
        why = keys["explained"].get(
            kind, "NOT BY DESIGN: " + ", ".join(keys["not_by_design"].get(kind, []))
        )
        size = keys["bytes_by_kind"][kind]
        lines.append(f"    {count:>4} {kind} ({size:,} bytes): {why}")
    return lines


def _postgres_lines(found: Mapping[str, Any]) -> list[str]:
    tasks = found["tasks"]
    lines = [f"PostgreSQL result tables after {tasks:,} tasks (total = heap + TOAST + indexes; "
             "per million tasks):"]  # fmt: skip
    for table, size in found["tables"].items():
        lines.append(
            f"  {table}: {size['rows']:,} rows ({size['dead_rows']:,} dead); total "
            f"{_per_million(size['total_bytes'], tasks)}, heap "
            f"{_per_million(size['heap_bytes'], tasks)}, indexes "
            f"{_per_million(size['index_bytes'], tasks)} per million "
            f"(as measured: {_mib(size['total_bytes'])})"
        )
    return lines


def render(report: Mapping[str, Any]) -> list[str]:
    lines = _run_lines(report)
    lines += _delivery_lines(report["deliveries"])
    lines += _rss_lines(report["rss_growth"], report["settings"])
    lines += _redis_lines(report)
    lines += _postgres_lines(report["postgres"])
    if report["chaos_errors"]:
        lines.append(f"chaos errors: {report['chaos_errors']}")
    lines.append("checks: " + "; ".join(f"{name}: {'PASS' if ok else 'FAIL'}"
                                        for name, ok in report["checks"].items()))  # fmt: skip
    return lines
