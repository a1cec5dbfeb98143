"""The command line reads what it is given as the API does (``operations.parsing``): a state
outside the vocabulary is a usage error that lists the states there are, states may be given
repeated or comma-separated, times as ISO or as a duration ago."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import taskqueue


def test_a_typo_in_a_state_is_a_usage_error_listing_the_states(tmp_path: Path) -> None:
    base = ["--database-url", f"sqlite:///{tmp_path / 'results.db'}", "tasks"]
    typo = taskqueue(*base, "--state", "FAILED")
    assert typo.returncode == 2, typo.stderr
    assert "FAILED" in typo.stderr and "FAILURE" in typo.stderr and "RETRY" in typo.stderr
    for given in (["--state", "failure,retry"], ["--state", "FAILURE", "--state", "RETRY"],
                  ["--since", "2h", "--until", "1m"]):  # fmt: skip
        done = taskqueue(*base, *given, "--json")
        assert done.returncode == 0, (given, done.stderr)
    later = taskqueue(*base, "--since", "tomorrow")
    assert later.returncode == 2 and "duration" in later.stderr
