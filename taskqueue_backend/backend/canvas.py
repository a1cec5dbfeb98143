"""Chords and chains in the result backend: the atomic chord counter, and the groups a failed
chain would have started.

- A chord completes by an atomic counter (``UPDATE … RETURNING``) in the worker of its last
  member; ``celery.chord_unlock`` never runs. The members' results are committed before the
  counter moves; a worker holds the member while the store is unreachable, as it holds its
  result (``outage``). Errors propagate as with Celery's own backends: the body is failed with
  a ``ChordError`` naming the failing dependency and keeping its exception as the cause.
- Celery's ``mark_as_failure`` stores the failure for every later step of the failed task's
  chain that has a task id of its own, so ``get()`` on the chain raises at once. A group step
  (``add.s(1, 1) | fail.s() | group(add.s(1), add.s(1))``) has none: its members never run, and
  ``get()`` on the group's result waits for them forever, with Celery's own backends too. Here
  each member of such a group — the last step of a member that is a chain, the body of one that
  is a chord, the members of a nested group — is stored with the same failure
  (``group_members``), so ``get()`` raises what the failed task raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from celery import states
from celery.exceptions import ChordError
from celery.result import GroupResult, allow_join_result

from . import deferred, outage

logger = logging.getLogger(__name__)

#: how deep nested groups and chains are followed
MAX_DEPTH = 20


def group_members(chain: Any) -> Iterator[tuple[str, str | None]]:
    """(task id, task name) of the results that the group steps of ``chain`` would produce."""
    try:
        steps = list(chain or ())
    except TypeError:  # a request's chain may be a placeholder
        return
    for step in steps:
        if isinstance(step, dict) and step.get("subtask_type") == "group":
            yield from _results_of(step, 0)


def _results_of(signature: Any, depth: int) -> Iterator[tuple[str, str | None]]:
    """(task id, task name) of the results that stand for ``signature``'s result."""
    if not isinstance(signature, dict) or depth > MAX_DEPTH:
        return
    kind = signature.get("subtask_type")
    kwargs = signature.get("kwargs") or {}
    if kind == "group":
        for member in kwargs.get("tasks") or ():
            yield from _results_of(member, depth + 1)
    elif kind == "chain":
        tasks = kwargs.get("tasks") or ()
        if tasks:
            yield from _results_of(tasks[-1], depth + 1)
    elif kind == "chord":
        yield from _results_of(kwargs.get("body"), depth + 1)
    else:
        task_id = (signature.get("options") or {}).get("task_id")
        if task_id:
            name = signature.get("task")
            yield str(task_id), str(name) if name else None


def chord_error(message: str, cause: BaseException | None = None) -> ChordError:
    """A ``ChordError`` that keeps the failing dependency's exception as its cause, as
    Celery's own backends raise it (``_create_chord_error_with_cause``, Celery >= 5.6)."""
    error = ChordError(message)
    if isinstance(cause, Exception):
        error.__cause__ = cause
    return error


def chord_part_returned(backend: Any, request: Any) -> None:
    """One member of a chord finished (its result is stored): count it, and run the body (or
    fail it) when it was the last."""
    from celery.canvas import maybe_signature

    gid = getattr(request, "group", None)
    if not gid or not getattr(request, "chord", None):
        return
    app = backend.app
    callback = maybe_signature(request.chord, app=app)
    deferred.drain()  # the members' results are committed before the counter moves
    window = backend.settings.result_store_retry_window if outage.in_worker() else 0
    deadline = time.monotonic() + window
    counted = outage.retry_until(lambda: backend.store.chord_part_done(gid), deadline,
                                 f"the count of chord {gid}")  # fmt: skip
    try:
        deps = outage.retry_until(lambda: GroupResult.restore(gid, backend=backend), deadline,
                                  f"the header of chord {gid}")  # fmt: skip
    except Exception as exc:
        logger.exception("Chord %r raised: %r", gid, exc)
        return backend.chord_error_from_stack(
            callback, ChordError(f"Cannot restore group: {exc!r}")
        )
    if counted is None or deps is None:
        return backend.chord_error_from_stack(
            callback, ChordError(f"GroupResult {gid} no longer exists")
        )
    done, size = counted
    size = request.chord.get("chord_size") or size or len(deps)
    if done != size:
        if done > size:
            logger.warning("Chord counter incremented too many times for %r", gid)
        return
    join = deps.join_native if deps.supports_native_join else deps.join
    try:
        with allow_join_result():
            ret = join(timeout=app.conf.result_chord_join_timeout, propagate=True)
    except Exception as exc:
        try:
            # the group's own report needs Celery's result cache, which is off by default
            culprit = next(r for r in deps.results if r.state in states.PROPAGATE_STATES)
            reason = f"Dependency {culprit.id} raised {exc!r}"
        except StopIteration:
            reason = repr(exc)
        logger.exception("Chord %r raised: %r", gid, reason)
        backend.chord_error_from_stack(callback, chord_error(reason, exc))
    else:
        try:
            app.amqp._retry_publish(callback.delay, ret)
        except Exception as exc:
            logger.exception("Chord %r raised: %r", gid, exc)
            backend.chord_error_from_stack(callback, chord_error(f"Callback error: {exc!r}", exc))
    finally:
        deps.delete()
