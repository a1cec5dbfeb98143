"""What one publish costs Redis inside ``publish.lua``, part by part, beside stock's LPUSH.

    python bench/publish_script.py [--messages 5000] [--rounds 2]

On a dedicated redis-server, pipelined in chunks of 500 as a ``producer.batch()`` burst sends
them (so the round trips are shared and what is left is the commands' own cost), each variant
stores ``--messages`` messages with a 700-byte body, and the server's CPU per call is printed:
stock's ``LPUSH``; a script that only returns (the price of ``EVALSHA`` with these arguments);
the shared prelude alone; ``publish.lua`` as shipped; and ``publish.lua`` with one of its parts
left out (the message's hash, its place in the queue, the task-id index, the wake-up token, the
expiry check), which shows what each part costs. The variants without a part are measurements
only: the broker needs every part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.costs import redis_cpu_seconds  # noqa: E402
from taskqueue_backend.embedded import EmbeddedRedis  # noqa: E402
from taskqueue_backend.transport.scripts import script_source  # noqa: E402

BODY = "x" * 700
CHUNK = 500
BASE = "tq:{bench}"


def variants() -> dict[str, str | None]:
    """Each variant's script source (None: stock's LPUSH)."""
    shipped = script_source("publish")
    prelude = shipped[: shipped.index("-- Store one message")]
    parts = {
        "the message's hash": "redis.call('HSET', mk, unpack(fields))",
        "its place in the queue": "redis.call('ZADD', KEYS[1], tail_score(base, rank), id)",
        "the task-id index": "redis.call('HSET', base .. ':ids', ARGV[4], id)",
        "the wake-up token": "wake(base)",
        "the expiry check": "touch(base, mk)",
    }
    found: dict[str, str | None] = {
        "stock LPUSH": None,
        "EVALSHA of a script that only returns": "return 1",
        "the shared prelude, then return": prelude + "\nreturn 1",
        "publish.lua as shipped": shipped,
    }
    body = shipped[len(prelude) :]
    for part, text in parts.items():
        assert text in body, f"publish.lua no longer has {text!r}"
        found[f"publish.lua without {part}"] = prelude + body.replace(text, "")
    return found


def sender(client: redis.Redis, source: str | None) -> Callable[[Any, int], None]:
    """Queues message ``i`` of this variant on a pipeline."""
    if source is None:
        return lambda pipe, i: pipe.lpush(f"{BASE}:stock", BODY)
    script = client.register_script(source)
    return lambda pipe, i: script(
        keys=[f"{BASE}:ready"], args=[f"m{i}", BODY, 0, f"t{i}", 0, 0, 1_000 + i, 0], client=pipe
    )


def cost_per_call(client: redis.Redis, source: str | None, messages: int) -> float:
    """Redis CPU µs per message of one variant, on an emptied database."""
    client.flushdb()  # the benchmark's own server: nothing else lives here
    send = sender(client, source)
    warm = client.pipeline(transaction=False)
    send(warm, -1)  # loads the script before timing
    warm.execute()
    before = redis_cpu_seconds(client)
    for start in range(0, messages, CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + CHUNK, messages)):
            send(pipe, i)
        pipe.execute()
    return (redis_cpu_seconds(client) - before) * 1e6 / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    chosen = variants()
    found: dict[str, list[float]] = {name: [] for name in chosen}
    with EmbeddedRedis() as server:
        print(f"benchmark: dedicated redis-server on port {server.port}; {args.messages} "
              f"pipelined messages per variant, {args.rounds} rounds")  # fmt: skip
        client = redis.Redis.from_url(server.url)
        for _ in range(args.rounds):
            for name, source in chosen.items():
                found[name].append(cost_per_call(client, source, args.messages))
    shipped = statistics.median(found["publish.lua as shipped"])
    print(f"{'Redis CPU µs per message (median of rounds)':48} {'µs':>6} {'vs shipped':>11}")
    for name, costs in found.items():
        cost = statistics.median(costs)
        print(f"{name:48} {cost:6.1f} {cost - shipped:+10.1f}")


if __name__ == "__main__":
    main()
