"""Several control planes on one host (replicas, a staging and a production one, parallel test
runs): each ``taskqueue control-plane`` serves and stops on its own. None takes gunicorn's
per-user control socket, which a second server would take over from the first — and whose
``gunicornc`` commands (shutdown, reload, worker counts) would then reach the wrong server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.control_plane import ServeControlPlane, ServedControlPlane

LISTENING = re.compile(r"Control socket listening at (\S+)")


def control_sockets(server: ServedControlPlane) -> set[str]:
    """The control sockets gunicorn says this server listens at."""
    return set(LISTENING.findall(server.log_path.read_text(errors="replace")))


def test_two_control_planes_on_one_host_serve_and_stop_on_their_own(
    api_env: dict[str, str], api: Any, serve_control_plane: ServeControlPlane, tmp_path: Path
) -> None:
    assert api.ops.results is not None  # the result store's tables, before two servers race
    host = tmp_path / "user"  # one user's home and runtime directory, shared by both servers
    host.mkdir()
    home = {"HOME": str(host), "XDG_RUNTIME_DIR": str(host)}
    first = serve_control_plane(api_env, **home)
    second = serve_control_plane(api_env, **home)

    for server in (first, second):
        answer = server.get("/api/v1/queues")
        assert answer.status_code == 200, (server.url, answer.text)
    shared = control_sockets(first) & control_sockets(second)
    assert shared == set(), f"both servers listen at {shared}"
    assert sorted(p.name for p in host.rglob("*.ctl")) == [], "a control socket for the host"

    first.stop()
    assert first.process.returncode == 0, first.log_tail()
    assert second.get("/api/v1/queues").status_code == 200, second.log_tail()
    second.stop()
    assert second.process.returncode == 0, second.log_tail()
    for server in (first, second):
        log = server.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "[ERROR]" not in log, log
