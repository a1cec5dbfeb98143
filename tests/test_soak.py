"""The soak benchmark's plumbing with tiny numbers (``bench/soak.py``; the real run is a
million tasks): its own Sentinel set, records server and database, workers killed and
restarted, one failover, and a report that accounts for every task, names every key left in
the broker and gives the result tables' sizes; nothing of it is left running or stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy

from bench import soak


def test_a_tiny_soak_kills_fails_over_and_accounts_for_every_task(
    database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database_url is None:
        pytest.skip("no PostgreSQL available (set DATABASE_URL)")
    monkeypatch.setenv("TQ_SOAK_DATABASE_URL", database_url)
    report_path = tmp_path / "soak.json"
    code = soak.main([
        "--tasks", "1500", "--kill-every", "3", "--failover-at", "0.3", "--replica-timeout",
        "0.1", "--heartbeat-timeout", "3", "--heartbeat-interval", "1", "--warmup", "1",
        "--min-span", "1", "--sample-every", "0.5", "--stall-timeout", "20",
        "--log-dir", str(tmp_path / "logs"), "--json-report", str(report_path),
    ])  # fmt: skip
    report = json.loads(report_path.read_text())
    checks = report["checks"]
    for name in ("completed", "nothing lost, duplicates explained", "no leaked broker keys",
                 "every worker alive at the end"):  # fmt: skip
        assert checks[name], (name, report["deliveries"], report["broker_keys"])
    # a tiny run's RSS is all warm-up: its check is the real run's business, not this test's
    assert code == (0 if all(checks.values()) else 1)
    found = report["deliveries"]
    assert found["published"] == 1500 and found["lost_confirmed"] == 0, found
    assert report["kills"] and report["failover"]["promoted_after_s"] > 0, report["failover"]
    killed = {kill["number"] for kill in report["kills"]}
    assert 4 not in killed  # the spare worker lives through the run
    assert report["rss_growth"]["incarnations"]
    tables = report["postgres"]["tables"]
    assert tables["tq_results"]["rows"] == found["finished"], tables
    assert tables["tq_task_events"]["total_bytes"] > 0, tables
    engine = sqlalchemy.create_engine(database_url)
    with engine.connect() as connection:
        left = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_database WHERE datname = %(name)s",
            {"name": report["settings"]["database"]},
        ).scalar()
    engine.dispose()
    assert left == 0, "the run's database was not dropped"
