"""Acting on tasks: submit (with an idempotency key), retry, revoke, and the same in bulk.

- **submit** publishes a task by name through Celery (``send_task``), with arguments, queue,
  priority and countdown/ETA. An idempotency key makes a repeat of the same request within
  the key's window return the first task id without sending anything; the same key with a
  different request is a conflict. Keys are the caller's own (a key is scoped to the actor:
  another operator's identical key is another request). The key is claimed in Redis before
  anything is sent, so concurrent identical requests send once. A task may be scheduled at
  most 366 days ahead, by countdown or ETA alike.
- **retry** runs a finished task again under the same id: from its dead letter when it has
  one (exactly a dead-letter replay), otherwise re-sent from the name, arguments and queue its
  result row stored (``result_extended``), after its result is reopened — so its history
  reads failed, replayed, received, started, … as with a replay.
- **revoke** is durable: a waiting (ready or delayed) message is removed from the broker and
  can never run, and the result says REVOKED; a running or prefetched one is signalled
  through Celery's remote control (``terminate`` kills it). The history and the audit log
  name who did it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..clock import as_utc, from_epoch, iso, utcnow
from ..vocabulary import BulkAction, Signal, values
from . import history
from .errors import Conflict, InvalidRequest, NotFound, one_of

if TYPE_CHECKING:
    from .api import Operations
    from .tasks import TaskQuery

logger = logging.getLogger(__name__)

#: the furthest a task may be scheduled ahead, by countdown or eta (seconds)
LONGEST_DELAY = 366 * 86400
#: how long an idempotency key holds its task id (seconds)
IDEMPOTENCY_WINDOW = 24 * 3600
ACTIONS = values(BulkAction)
SIGNALS = values(Signal)


@dataclass
class Submitted:
    task_id: str
    name: str
    queue: str | None
    eta: datetime | None
    duplicate: bool = False  # an earlier request with the same idempotency key sent it


@dataclass
class RetryOutcome:
    task_id: str
    source: str  # dead_letter | result
    queue: str | None


@dataclass
class RevokeOutcome:
    task_id: str
    removed: bool = False  # its waiting message was deleted from the broker
    signalled: bool = False  # running or prefetched: revoked through remote control
    terminate: bool = False
    result_revoked: bool = False


@dataclass
class BulkOutcome:
    action: str
    matched: int = 0
    done: int = 0
    dry_run: bool = False
    task_ids: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # task id -> why it was skipped


class TaskActions:
    """Mixed into ``tasks.Tasks``."""

    ops: Operations

    if TYPE_CHECKING:

        def resolve(self, ident: str, missing_ok: bool = False) -> str: ...

        def search(self, query: TaskQuery | None = None, limit: int = 50,
                   cursor: str | None = None) -> Any: ...  # fmt: skip

    # -- submit ----------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        idempotency_key: str | None = None,
        reason: str = "",
    ) -> Submitted:
        """Publish task ``name``; see the module docstring for the idempotency key."""
        request = self._submission(name, args, kwargs, queue, priority, countdown, eta)
        request["queue"] = request["queue"] or self._routed_queue(request)
        if not idempotency_key:
            return self._send(request, str(uuid.uuid4()), reason)
        # a key is the caller's own: another principal reusing it gets a task of its own
        digest = hashlib.sha256(f"{self.ops.actor}\n{idempotency_key}".encode()).hexdigest()
        fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        task_id = str(uuid.uuid4())
        claim = json.dumps({"task_id": task_id, "fingerprint": fingerprint})
        data = self.ops.broker.admin
        if data.claim_once(digest, claim, IDEMPOTENCY_WINDOW):
            try:
                return self._send(request, task_id, reason, idempotency_key=True)
            except Exception:
                data.unclaim(digest)  # nothing was sent: the key may be used again
                raise
        first = json.loads(data.claim_of(digest) or "{}")
        if first.get("fingerprint") != fingerprint:
            raise Conflict("this Idempotency-Key was used for a different request within its "
                           "window; use a new key for a new request")  # fmt: skip
        eta_sent = request.get("eta")
        return Submitted(first["task_id"], name, request.get("queue"),
                         as_utc(datetime.fromisoformat(eta_sent)) if eta_sent else None,
                         duplicate=True)  # fmt: skip

    def _submission(
        self, name: str, args: Any, kwargs: Any, queue: str | None, priority: int | None,
        countdown: float | None, eta: datetime | None,
    ) -> dict[str, Any]:  # fmt: skip
        if not name or not isinstance(name, str):
            raise InvalidRequest("name: give the task's registered name, e.g. proj.tasks.add")
        if self.ops.knows_tasks and name not in self.ops.celery.tasks:
            raise InvalidRequest(f"name: no task {name!r} is registered in the app")
        if not isinstance(args, list | tuple):
            raise InvalidRequest("args must be a list")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise InvalidRequest("kwargs must be an object")
        if countdown is not None and eta is not None:
            raise InvalidRequest("give countdown or eta, not both")
        if countdown is not None and not 0 <= countdown <= LONGEST_DELAY:
            raise InvalidRequest(f"countdown must be 0 to {LONGEST_DELAY} seconds (366 days), got "
                                 f"{countdown}")  # fmt: skip
        if priority is not None:
            from ..transport.options import InvalidPriority

            try:
                self.ops.broker.options.rank(priority)
            except InvalidPriority as exc:
                raise InvalidRequest(f"priority: {exc}") from None
        due = as_utc(eta) if eta is not None else None
        if due is not None and due.timestamp() > time.time() + LONGEST_DELAY:
            raise InvalidRequest("eta must be at most 366 days ahead (as countdown)")
        if countdown is not None:
            due = from_epoch(time.time() + countdown)
        try:
            json.dumps([list(args), kwargs or {}])
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"args and kwargs must be JSON: {exc}") from None
        return {"name": name, "args": list(args), "kwargs": kwargs or {}, "queue": queue,
                "priority": priority, "eta": iso(due) if due else None}  # fmt: skip

    def _send(
        self, request: dict[str, Any], task_id: str, reason: str, idempotency_key: bool = False
    ) -> Submitted:
        eta = as_utc(datetime.fromisoformat(request["eta"])) if request["eta"] else None
        options: dict[str, Any] = {"task_id": task_id}
        for option in ("queue", "priority"):
            if request[option] is not None:
                options[option] = request[option]
        if eta is not None:
            options["eta"] = eta
        # written before publishing: the task's history starts with "sent" even when a worker
        # records "received" within milliseconds
        recorded = self._record_sent(task_id, request, reason)
        try:
            self.ops.celery.send_task(request["name"], request["args"], request["kwargs"],
                                      **options)  # fmt: skip
        except Exception:
            if recorded:  # nothing was sent: no trace of a task that does not exist
                assert self.ops.results is not None
                self.ops.results.discard(task_id)
            raise
        queue = request["queue"]
        self.ops.audit.record(self.ops.actor, "task.submit", task_id, reason, name=request["name"],
                              queue=request["queue"], idempotency_key=idempotency_key)  # fmt: skip
        return Submitted(task_id, request["name"], queue, eta)

    def _routed_queue(self, request: dict[str, Any]) -> str | None:
        """Where Celery's routing sent a task published without a queue."""
        try:
            route = self.ops.celery.amqp.router.route({}, request["name"], request["args"],
                                                     request["kwargs"])  # fmt: skip
            return str(route["queue"].name)
        except Exception:  # routing is the app's business; the answer is informative only
            return None

    def _record_sent(self, task_id: str, request: dict[str, Any], reason: str) -> bool:
        """A PENDING row and a ``sent`` history row, so the task's page exists at once."""
        if self.ops.results is None:
            return False
        now = utcnow()
        from ..backend.queries import event_row
        from ..backend.text import clean_text

        detail = {"actor": self.ops.actor, "reason": reason, **self.ops.context}
        if request["eta"]:
            detail["eta"] = request["eta"]
        row = {"task_id": task_id, "state": "PENDING", "name": clean_text(request["name"]),
               "queue": clean_text(request["queue"]), "sent_at": now,
               "updated_at": now}  # fmt: skip
        try:
            self.ops.results.write(row, [event_row(task_id, lifecycle.SENT, "PENDING", None,
                                                   detail, now)])  # fmt: skip
        except Exception as exc:  # the task is sent anyway: the worker's rows will record it
            logger.warning("task %s: its sent row could not be written: %s", task_id, exc)
            return False
        return True

    # -- retry -----------------------------------------------------------------------------

    def retry(self, ident: str, reason: str = "") -> RetryOutcome:
        """Run a finished task again under the same id (see the module docstring)."""
        task_id = self.resolve(ident)
        dead = self.ops.dead_letters.find(task_id) if self.ops.has_broker else None
        if dead is not None:
            outcome = self.ops.dead_letters.replay([task_id], reason=reason)
            if not outcome.done:
                raise Conflict(f"the dead letter of task {task_id} was replayed by someone else "
                               "meanwhile")  # fmt: skip
            return RetryOutcome(task_id, "dead_letter", dead.queue)
        waiting = [m for m in self.ops.queues.find(task_id)] if self.ops.has_broker else []
        if waiting:
            raise Conflict(f"task {task_id} is still {waiting[0].state} in queue "
                           f"{waiting[0].queue}: nothing to retry")  # fmt: skip
        row = self.ops.results.read(task_id) if self.ops.results is not None else None
        if row is None:
            raise NotFound(f"task {task_id} has no dead letter and no stored result to retry "
                           "from")  # fmt: skip
        if row.state not in ("FAILURE", "REVOKED", "REJECTED"):
            raise Conflict(f"task {task_id} is {row.state}: only a failed or revoked task is "
                           "retried")  # fmt: skip
        args, kwargs = _stored_arguments(row)
        history.reopen(self.ops, [(task_id, {"actor": self.ops.actor, "reason": reason,
                                             "source": "result"})])  # fmt: skip
        options = {"task_id": task_id}
        if row.queue:
            options["queue"] = row.queue
        self.ops.celery.send_task(row.name, args, kwargs, **options)
        self.ops.audit.record(self.ops.actor, "task.retry", task_id, reason, source="result",
                              name=row.name, queue=row.queue)  # fmt: skip
        return RetryOutcome(task_id, "result", row.queue)

    # -- revoke ----------------------------------------------------------------------------

    def revoke(
        self, ident: str, *, terminate: bool = False, signal: str = Signal.SIGTERM, reason: str = ""
    ) -> RevokeOutcome:
        """Make sure a task never runs (or stops): see the module docstring."""
        signal = one_of(Signal, signal, "signal")
        task_id = self.resolve(ident)
        outcome = RevokeOutcome(task_id, terminate=terminate)
        in_flight = False
        try:
            removed = self.ops.queues.remove(task_id, reason=reason)
            outcome.removed = bool(removed.removed)
            outcome.result_revoked = removed.result_revoked
            in_flight = bool(removed.in_flight)
        except NotFound:
            pass
        if not outcome.removed:
            row = self.ops.results.read(task_id) if self.ops.results is not None else None
            if row is not None and row.state in ("SUCCESS", "FAILURE", "REVOKED") and \
                    not in_flight:  # fmt: skip
                raise Conflict(f"task {task_id} already finished ({row.state})")
            self.ops.celery.control.revoke(task_id, terminate=terminate, signal=signal)
            outcome.signalled = True
            detail = {"actor": self.ops.actor, "reason": reason, "requested": True,
                      "terminate": terminate}  # fmt: skip
            history.record(self.ops, lifecycle.REVOKED, [task_id], detail)
            self.ops.audit.record(self.ops.actor, "task.revoke", task_id, reason,
                                  terminate=terminate, signal=signal, signalled=True)  # fmt: skip
        return outcome

    # -- bulk ------------------------------------------------------------------------------

    def bulk(
        self,
        action: str,
        ids: list[str] | None = None,
        query: TaskQuery | None = None,
        *,
        dry_run: bool = False,
        limit: int = 1000,
        terminate: bool = False,
        reason: str = "",
    ) -> BulkOutcome:
        """``retry`` or ``revoke`` the named tasks, or every result ``query`` matches — at most
        ``limit`` (a larger match is refused, so a broad filter never acts by surprise)."""
        action = one_of(BulkAction, action, "action")
        if not 1 <= limit <= 10_000:
            raise InvalidRequest(f"limit must be from 1 to 10000, got {limit}")
        if bool(ids) == (query is not None):
            raise InvalidRequest("name the tasks: ids or a filter (exactly one)")
        selected = [self.resolve(i) for i in ids] if ids else self._matching(query, limit)
        outcome = BulkOutcome(action, matched=len(selected), dry_run=dry_run, task_ids=selected)
        if dry_run:
            return outcome
        for task_id in selected:
            try:
                if action == "retry":
                    self.retry(task_id, reason=reason)
                else:
                    self.revoke(task_id, terminate=terminate, reason=reason)
                outcome.done += 1
            except (Conflict, NotFound, InvalidRequest) as exc:
                outcome.errors[task_id] = str(exc)
        self.ops.audit.record(self.ops.actor, f"task.bulk_{action}", f"{len(selected)} tasks",
                              reason, matched=outcome.matched, done=outcome.done,
                              task_ids=selected[:1000])  # fmt: skip
        return outcome

    def _matching(self, query: Any, limit: int) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            page = self.search(query, limit=min(1000, limit + 1), cursor=cursor)
            found += [r.task_id for r in page.items]
            if len(found) > limit:
                raise InvalidRequest(f"the filter matches more than limit={limit} tasks; narrow "
                                     "it, or raise the limit")  # fmt: skip
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor


def _stored_arguments(row: Any) -> tuple[list[Any], dict[str, Any]]:
    """The JSON args and kwargs a result row keeps (``result_extended``), or a clear refusal."""
    if not row.name or row.args is None or row.kwargs is None:
        raise InvalidRequest(f"task {row.task_id} was stored without its name and arguments "
                             "(turn on result_extended), so it cannot be re-sent")  # fmt: skip
    if (row.content_type or "application/json") != "application/json":
        raise InvalidRequest(f"task {row.task_id}'s arguments are stored as {row.content_type}; "
                             "only JSON arguments are re-sent")  # fmt: skip
    args, kwargs = json.loads(row.args), json.loads(row.kwargs)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidRequest(f"task {row.task_id}'s stored arguments were cut (too large) or are "
                             "not a list and an object")  # fmt: skip
    return args, kwargs
