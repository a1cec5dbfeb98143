"""End-to-end demo (``python -m examples.demo [--port PORT]``): a stock worker drains tasks in
priority order.

Ten ``report`` tasks with shuffled priorities are published before the worker starts; a single
worker (``-P solo -c 1``, prefetch 1) then runs them strictly by priority, lowest number first.
Then ``add(2, 3)`` with a 2 s countdown shows delayed delivery from the broker, a failing
``charge`` task lands in the dead letters and runs again once "fixed" by a replay (its whole
history shows failed, dead-lettered, replayed, succeeded), and the worker registry lists the
worker. Then it serves the control plane (``examples.serving``: admin UI and REST API) over
all of it, with a dead letter left to replay and a paused queue, and prints its URL and a
login token until Ctrl-C (on ``--port``, else 8080 when it is free, else any free port).

Without ``REDIS_URL`` an embedded redis-server is started and removed afterwards. With it, the
demo works under a key prefix of its own (``taskqueue-demo-<random>:``) and removes every key
under it at the end, leaving that Redis as it found it; given ``BROKER_KEYPREFIX`` it works
under that prefix instead, which may hold other data, so it leaves its keys there and says
which. The commands printed at the end work after the demo has exited.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from kombu.exceptions import OperationalError

from examples.serving import populate, port_is_free, serve_until_interrupted
from taskqueue_backend.embedded import EmbeddedRedis

REPO_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class DemoFailed(Exception):
    pass


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def wait_until(check: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DemoFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def start_worker(queue: str, nodename: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "celery", "-A", "examples.proj", "worker",
        "-c", "1", "-P", "solo", "--prefetch-multiplier", "1", "-l", "WARNING",
        "-Q", queue, "-n", nodename,
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    say("starting worker: celery -A examples.proj worker -c 1 -P solo -l WARNING ...")
    # Own session, so that Ctrl-C reaches only the demo, which then stops the worker cleanly.
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        say("stopping worker (SIGTERM)")
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run_demo(embedded: bool, own_prefix: bool, port: int | None) -> None:
    # Imported only now: the example's configuration reads REDIS_URL and BROKER_KEYPREFIX at
    # import time.
    from examples.proj.celery import app
    from examples.proj.tasks import add, charge, report

    queue = f"demo-{uuid.uuid4().hex[:8]}"  # a queue of its own, so a shared Redis is safe
    prefix = app.conf.broker_transport_options.get("global_keyprefix") or ""
    order_key = f"{prefix}demo:{queue}:order"  # likewise the list the tasks report into
    redis_client = redis.Redis.from_url(app.conf.broker_url, decode_responses=True)

    priorities = list(range(10))
    random.shuffle(priorities)
    say(f"publishing 10 report tasks with priorities in this order: {priorities}")
    for number, priority in enumerate(priorities):
        report.apply_async(
            (f"priority={priority} #{number}",), {"key": order_key}, queue=queue, priority=priority
        )

    worker = start_worker(queue, nodename=f"{queue}@%h")

    def reported(count: int) -> Callable[[], bool]:
        return lambda: worker_alive() and redis_client.llen(order_key) >= count

    def worker_alive() -> bool:
        if worker.poll() is not None:
            raise DemoFailed(f"the worker exited with code {worker.returncode}; see its output")
        return True

    def worker_answers_ping() -> bool:
        worker_alive()
        replies = app.control.ping(timeout=1.0)
        return any(name.startswith(f"{queue}@") for reply in replies for name in reply)

    try:
        wait_until(worker_answers_ping, 30, "the worker to answer a ping")
        say("worker answered ping")

        wait_until(reported(10), 30, "10 report tasks to run")
        order = [str(label) for label in redis_client.lrange(order_key, 0, -1)]
        say("the worker ran them in this order:")
        for label in order:
            print(f"    {label}")
        ran = [int(label.split()[0].removeprefix("priority=")) for label in order]
        if ran != sorted(priorities):
            raise DemoFailed(f"expected priority order {sorted(priorities)}, got {ran}")
        say("strict priority order: lowest number first")

        say("publishing add(2, 3) with countdown=2 and waiting for its result")
        started = time.monotonic()
        handle = add.apply_async((2, 3), countdown=2, queue=queue)
        result = handle.get(timeout=30)
        elapsed = time.monotonic() - started
        say(f"add(2, 3) = {result}, {elapsed:.1f} s after publishing (result backend: "
            f"{app.backend.as_uri()})")  # fmt: skip
        if elapsed < 1.9:
            raise DemoFailed(f"the countdown task ran after {elapsed:.2f} s, before it was due")
        say("its history, as the result backend recorded it:")
        wait_until(lambda: len(app.backend.task_history(handle.id)) >= 3, 10, "the history")
        for event in app.backend.task_history(handle.id):
            print(f"    {event['at']:%H:%M:%S.%f}  {event['event']:<10} {event['worker'] or ''}")
        replayed = show_dead_letters(app, charge, queue, redis_client, prefix)
        show_workers(app)
        populate(app, queue, prefix)
        serve_until_interrupted(app, port)
    finally:
        stop_worker(worker)
        redis_client.delete(order_key, f"{prefix}demo:{queue}:fixed")
        redis_client.close()
        app.close()  # its connections too, before its keys are removed
    show_commands(app, replayed, queue, show_broker=not embedded and not own_prefix)


def show_dead_letters(
    app: Any, charge: Any, queue: str, redis_client: redis.Redis, prefix: str
) -> str:
    """A task that fails lands in the dead letters; after the "fix" a replay runs it."""
    from taskqueue_backend.operations import Operations

    fixed_flag = f"{prefix}demo:{queue}:fixed"
    say("publishing charge('INV-42'), which fails until its bug is fixed")
    say("  (expected: the worker logs this failure with its traceback, ending in "
        "RuntimeError: payment API rejected invoice INV-42)")  # fmt: skip
    handle = charge.apply_async(("INV-42", fixed_flag), queue=queue)
    ops = Operations.from_app(app, actor="demo")
    dead = ops.dead_letters
    entry = wait_until(lambda: dead.find(handle.id), 30, "the failed task's dead letter")
    say(f"dead letter: {entry.task_name} reason={entry.reason} {entry.exc_type}: "
        f"{entry.exc_message}")  # fmt: skip
    redis_client.set(fixed_flag, "1")
    outcome = dead.replay([handle.id], reason="payment API fixed")
    say(f"fixed the bug; replayed {outcome.done} dead letter(s)")
    result = app.AsyncResult(handle.id).get(timeout=30)
    say(f"charge('INV-42') after the replay: {result}")
    wanted = ["failed", "dead_lettered", "replayed", "succeeded"]

    def whole_history() -> list[Any]:
        history = ops.tasks.history(handle.id)
        events = [e.event for e in history]
        return history if all(w in events for w in wanted) else []

    history = wait_until(whole_history, 10, "the replayed task's history")
    say("its whole history, as the result backend recorded it:")
    for event in history:
        detail = event.detail or {}
        note = detail.get("reason") or detail.get("exception") or ""
        print(f"    {event.at:%H:%M:%S.%f}"[:-3] + f"  {event.event:<14} "
              f"{event.worker or detail.get('actor') or '':<28} {note}")  # fmt: skip
    ops.close()
    return str(handle.id)


def show_workers(app: Any) -> None:
    from taskqueue_backend.operations import Operations

    say("workers, as the broker's heartbeats report them:")
    with Operations.from_app(app, actor="demo") as ops:
        for w in ops.workers.all():
            print(f"    {w.hostname:<40} {w.state:<8} pid={w.pid} processed={w.processed} "
                  f"failed={w.failed}")  # fmt: skip


def show_commands(app: Any, task_id: str, queue: str, show_broker: bool) -> None:
    """Commands that work after the demo exits: the result store stays; the broker's keys stay
    only under a prefix the demo was given (an embedded Redis is gone, and the keys under the
    demo's own prefix are removed)."""
    from taskqueue_backend.selection import result_database_url

    database = result_database_url(app) or ""
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        database = "sqlite:///" + str(REPO_ROOT / database.removeprefix("sqlite:///"))
    tool = os.path.relpath(Path(sys.executable).with_name("taskqueue"), Path.cwd())
    say("try it yourself (these work after the demo has exited):")
    print(f"    {tool} --database-url {database} status {task_id[:8]}")
    print(f"    {tool} --database-url {database} tasks --name 'examples.proj.tasks.*'")
    if show_broker:
        broker = f"--broker-url {app.conf.broker_url}"
        prefix = app.conf.broker_transport_options.get("global_keyprefix")
        if prefix:
            broker += f" --keyprefix {prefix}"
        print(f"    {tool} {broker} workers")
        print(f"    {tool} {broker} queues")


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM ends the demo as Ctrl-C does: the worker, the control plane and an embedded
    Redis are stopped, not left behind."""
    raise KeyboardInterrupt


def choose_prefix() -> tuple[str, bool]:
    """The broker key prefix the demo works under (``BROKER_KEYPREFIX``, read by the example's
    configuration), and whether it is the demo's own: then every key under it is the demo's."""
    given = os.environ.get("BROKER_KEYPREFIX")
    if given is not None:
        return given, False
    prefix = f"taskqueue-demo-{uuid.uuid4().hex[:8]}:"
    os.environ["BROKER_KEYPREFIX"] = prefix  # for the worker and the control plane too
    return prefix, True


def remove_keys(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` from the Redis at ``url``; how many there were."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # the prefix taken literally
    removed = 0
    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            removed += client.delete(*keys[start : start + 500])
    return removed


def tidy_up(url: str, prefix: str, own: bool) -> None:
    """Leave a Redis the demo was given as it found it, or say what is left there."""
    if not own:
        say(f"left its keys in {url} under the key prefix {prefix!r} it was given "
            "(BROKER_KEYPREFIX), which other data may share: its queues demo-… with their "
            "dead letters and waiting tasks, its worker in the registry and its audit entries; "
            "unset BROKER_KEYPREFIX to have the demo use a prefix of its own and remove its "
            "keys at the end")  # fmt: skip
        return
    try:
        removed = remove_keys(url, prefix)
    except redis.RedisError as exc:
        say(f"could not remove its keys under {prefix!r} from {url} ({exc}): they are all "
            f"the keys matching {prefix}*")  # fmt: skip
        return
    say(f"removed the {removed} keys it made under {prefix!r} from {url}")


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is a number from 1 to 65535, not {text!r}")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py demo", description="Run the taskqueue-backend demo, then serve "
        "its control plane until Ctrl-C.",
    )  # fmt: skip
    parser.add_argument("--port", type=port_number, metavar="PORT",
                        help="the control plane's port on 127.0.0.1 (default: 8080 when it "
                             "is free, else any free port)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.port is not None and not port_is_free(args.port):
        say(f"FAILED: port {args.port} on 127.0.0.1 is in use; choose another with --port")
        return 1
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # Ctrl-C stops the demo even where it was started with SIGINT ignored (a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server: EmbeddedRedis | None = None
    given = os.environ.get("REDIS_URL") or None  # a Redis the demo does not own
    prefix, own = choose_prefix()
    try:
        if given is None:
            server = EmbeddedRedis().start()
            os.environ["REDIS_URL"] = server.url
            say(f"REDIS_URL is not set: started an embedded redis-server at {server.url}")
        else:
            say(f"using REDIS_URL={given}")
            if own:
                say(f"working under a key prefix of its own, {prefix!r}, removed at the end")
        run_demo(embedded=server is not None, own_prefix=own, port=args.port)
    except (DemoFailed, RuntimeError) as exc:
        say(f"FAILED: {exc}")
        return 1
    except (redis.RedisError, OperationalError) as exc:
        say(f"FAILED: could not talk to Redis at {os.environ.get('REDIS_URL')}: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if server is not None:
            say("stopping the embedded redis-server")
            server.stop()
        elif given is not None:
            tidy_up(given, prefix, own)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
