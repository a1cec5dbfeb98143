"""The broker's Lua scripts: loaded once from the ``lua/`` folder, run by name.

Each script is one atomic move of a message (see the header of each ``.lua`` file);
``_common.lua`` is prepended to all of them.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis import Redis
from redis.commands.core import Script

SCRIPT_NAMES = (
    "publish",
    "fetch",
    "ack",
    "requeue",
    "dead_letter",
    "annotate",
    "recover",
    "remove",
    "purge",
    "delete",
    "stats",
    "dlq_claim",
    "dlq_release",
    "dlq_delete",
    "dlq_trim",
    "dlq_take_in",
    "dlq_hand_over",
    "bury_rebuilt",
    "offline",
    "bury_copy",
    "pause",
    "resume",
)


@cache
def script_source(name: str) -> str:
    folder = resources.files(__package__).joinpath("lua")
    common = folder.joinpath("_common.lua").read_text()
    return common + "\n" + folder.joinpath(f"{name}.lua").read_text()


class Scripts:
    """Registered scripts for one Redis client (each loads itself on first use)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    def __getitem__(self, name: str) -> Script:
        return self._scripts[name]

    def sha(self, name: str) -> str:
        script = self._scripts[name]
        return str(script.sha)

    def ensure_loaded(self) -> None:
        """Load every script the server does not have (one ``SCRIPT EXISTS``)."""
        scripts = list(self._scripts.values())
        exists = self.client.script_exists(*(str(s.sha) for s in scripts))
        for script, known in zip(scripts, exists, strict=True):
            if not known:
                script.sha = self.client.script_load(script.script)

    def load_all(self) -> None:
        for script in self._scripts.values():
            script.sha = self.client.script_load(script.script)
