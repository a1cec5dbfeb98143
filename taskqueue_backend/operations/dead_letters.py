"""Dead letters: list, show, count, replay, delete and purge — one class for every tool.

The broker keeps each queue's dead letters beside its other messages (``tq:{q}:dead``, scored
by the time the message died), with its envelope (as published; for a failed task that was
acknowledged on start, as rebuilt from its request), the reason, the detail and the counts.
Every mutating call records an audit entry with the actor and the reason, and — through the
result store this layer was given — a ``replayed`` or ``dead_letter_deleted`` row in each
task's history.

A replay claims its entries atomically (``dlq_claim.lua``), so two replayers racing on one
entry replay it once; it then reopens the tasks' results in the result store (FAILURE ->
PENDING, so the new run's states are recorded), and only then releases the messages to their
queue (``dlq_release.lua``). Without a result store (an operations layer built from a broker
URL only) the results of replayed tasks that use this package's backend stay as they were.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..clock import from_epoch, from_epoch_ms
from ..transport.messages import with_expiry
from . import history, parsing
from .data import Page
from .dead_letter_entries import (
    BATCH,
    STALE_CLAIM_MS,
    DeadLetter,
    Filter,
    Outcome,
    Progress,
    Stats,
    decode_cursor,
    encode_cursor,
    entry_of,
    reply_pairs,
)
from .errors import Conflict, InvalidRequest, NotFound
from .tasks import MIN_PREFIX, glob_escape

if TYPE_CHECKING:
    from ..transport.admin import BrokerAdmin
    from .api import Operations


class DeadLetters:
    """The dead letters of one broker."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @property
    def data(self) -> BrokerAdmin:
        return self.ops.broker.admin

    @property
    def actor(self) -> str:
        return self.ops.actor

    # -- reading ---------------------------------------------------------------------------

    def _candidates(
        self, flt: Filter, after: tuple[int, str] | None = None, chunk: int = BATCH
    ) -> Iterator[tuple[int, str, str]]:
        """(dead_at ms, id, queue) of the entries in the filter's queues and time range, newest
        first (and below ``after``, a cursor's position), read from each queue's dead set
        ``chunk`` at a time as they are consumed — a first page reads one chunk per queue,
        whatever the number of entries."""
        queues = [
            q for q in self.ops.queues.names()
            if not flt.queue or fnmatch.fnmatchcase(q, flt.queue)
        ]  # fmt: skip
        low = "-inf" if flt.since is None else int(flt.since.timestamp() * 1000)
        high: int | str = "+inf" if flt.until is None else int(flt.until.timestamp() * 1000)
        if after is not None:
            high = after[0] if high == "+inf" else min(int(high), after[0])

        def newest_first(queue: str) -> Iterator[tuple[int, str, str]]:
            offset = 0
            while True:
                members = self.data.dead_newest_first(queue, high, low, offset, chunk)
                for score, message_id in members:
                    found = (score, message_id, queue)
                    if after is None or (found[0], found[1]) < after:
                        yield found
                if len(members) < chunk:
                    return
                offset += chunk

        return heapq.merge(*(newest_first(q) for q in queues), key=lambda c: (c[0], c[1]),
                           reverse=True)  # fmt: skip

    def _load(
        self, candidates: list[tuple[int, str, str]], with_body: bool = False
    ) -> list[DeadLetter]:
        records = self.data.records([(queue, message_id) for _, message_id, queue in candidates])
        loaded = []
        for (score, _, _), message in zip(candidates, records, strict=True):
            if message is not None:  # else: removed meanwhile
                loaded.append(entry_of(message, score, with_body))
        return loaded

    def matching(
        self, flt: Filter | None = None, cursor: str | None = None, batch: int = BATCH
    ) -> Iterator[DeadLetter]:
        """Every matching entry, newest first, loaded ``batch`` at a time as consumed."""
        flt = flt or Filter()
        after = decode_cursor(cursor) if cursor else None
        candidates = self._candidates(flt, after, chunk=batch)
        while chunk := list(itertools.islice(candidates, batch)):
            for entry in self._load(chunk):
                if flt.matches(entry):
                    yield entry

    def page(
        self, flt: Filter | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[DeadLetter]:
        """One page of matching entries, newest first; pass ``next_cursor`` for the next."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"limit must be from 1 to 1000, got {limit}")
        items: list[DeadLetter] = []
        more = False
        exact = flt is None or not (flt.task_name or flt.reason or flt.exc_type or flt.text)
        batch = limit + 1 if exact else BATCH  # without entry filters, every entry matches
        for entry in self.matching(flt, cursor, batch):
            if len(items) == limit:
                more = True
                break
            items.append(entry)
        last = items[-1] if items else None
        next_cursor = None
        if more and last is not None and last.dead_at is not None:
            next_cursor = encode_cursor(round(last.dead_at.timestamp() * 1000), last.id)
        return Page(items, next_cursor)

    def find(self, ident: str) -> DeadLetter | None:
        """One entry by its message id, task id or a unique prefix of either, with its body
        (``Conflict`` when a prefix names several)."""
        ident = ident.strip()
        if not ident or not ident.isprintable():
            return None
        found = self._get(ident)
        if found is not None:
            return found
        task_id = self.ops.tasks.resolve(ident, missing_ok=True)
        if task_id and task_id != ident:
            return self._get(task_id)
        return self._by_message_prefix(ident) if len(ident) >= MIN_PREFIX else None

    def _by_message_prefix(self, prefix: str) -> DeadLetter | None:
        """The one entry whose message id starts with ``prefix`` (a scan of each queue's dead
        set, stopped at the second match)."""
        pattern = glob_escape(prefix) + "*"
        found: list[tuple[str, str]] = []
        for queue in self.ops.queues.names():
            for message_id in self.data.dead_ids_like(queue, pattern):
                found.append((queue, message_id))
                if len(found) > 1:
                    shown = ", ".join(m for _, m in found)
                    raise Conflict(f"{prefix!r} is the start of several dead letters' message "
                                   f"ids ({shown}, ...): give more characters")  # fmt: skip
        if not found:
            return None
        return self._get(found[0][1])

    def get(self, ident: str) -> DeadLetter:
        """Like :meth:`find`, but a missing entry is ``NotFound``."""
        found = self.find(ident)
        if found is None:
            raise NotFound(f"no dead letter with id or task id {ident!r}")
        return found

    def _get(self, ident: str) -> DeadLetter | None:
        located = self.data.locate_dead(self.ops.queues.names(), ident)
        if located is None:
            return None
        queue, message_id, score = located
        found = self._load([(score, message_id, queue)], with_body=True)
        return found[0] if found else None

    def stats(self, scan_limit: int | None = None) -> Stats:
        """Counts of the dead letters (see ``Stats``): totals per queue and the oldest age from
        each queue's dead set, counts by task, reason and exception from the newest
        ``scan_limit`` entries (all when None)."""
        if scan_limit is not None and scan_limit < 1:
            raise InvalidRequest(f"scan_limit must be at least 1, got {scan_limit}")
        stats = Stats()
        now = time.time()
        queues = self.ops.queues.names()
        oldest_ms: float | None = None
        for queue, counts in zip(queues, self.data.dead_counts(queues), strict=True):
            dead, first, trimmed, replaying = counts
            if dead:
                stats.by_queue[queue] = dead
                stats.total += dead
            if first is not None:
                oldest_ms = first if oldest_ms is None else min(oldest_ms, first)
            if trimmed:
                stats.trimmed[queue] = trimmed
            stats.replaying += replaying
        if oldest_ms is not None:
            stats.oldest_age = max(now - oldest_ms / 1000, 0.0)
        by_task: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        by_exception: Counter[str] = Counter()
        entries = self.matching()
        for entry in entries if scan_limit is None else itertools.islice(entries, scan_limit):
            stats.scanned += 1
            by_task[entry.task_name or "(unknown)"] += 1
            by_reason[entry.reason] += 1
            if entry.exc_type:
                by_exception[entry.exc_type] += 1
        stats.by_task = dict(by_task.most_common())
        stats.by_reason = dict(by_reason.most_common())
        stats.by_exception = dict(by_exception.most_common())
        return stats

    # -- selecting what a bulk operation applies to ------------------------------------------

    def _select(
        self, ids: Iterable[str] | None, flt: Filter | None, everything: bool
    ) -> list[DeadLetter]:
        given = [i for i in ids or () if i]
        chosen = sum((bool(given), flt is not None and not flt.is_empty, everything))
        if chosen != 1:
            raise InvalidRequest("name the dead letters: ids, a filter, or all (exactly one)")
        if given:
            return [self.get(ident) for ident in given]
        return list(self.matching(flt))

    # -- replay ------------------------------------------------------------------------------

    def replay(
        self,
        ids: Iterable[str] | None = None,
        flt: Filter | None = None,
        everything: bool = False,
        *,
        to_queue: str | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        reason: str = "",
        progress: Progress | None = None,
        expires: datetime | float | None = None,
        clear_expiry: bool = False,
    ) -> Outcome:
        """Put dead letters back on their queue (or ``to_queue``) with their priority.

        ``rate`` caps messages per second. A dry run only counts what would be replayed.
        An entry whose expiry (Celery's ``expires``) has passed would expire again at once:
        it is refused unless ``expires`` gives the replayed messages a new one (a time, or
        seconds from now) or ``clear_expiry`` removes it.
        """
        if rate is not None and rate <= 0:
            raise InvalidRequest(
                f"rate must be a positive number of messages per second, got {rate}"
            )
        if to_queue is not None and not to_queue.strip():
            raise InvalidRequest("to_queue must name a queue")
        new_expiry = _new_expiry(expires, clear_expiry)
        selected = self._select(ids, flt, everything)
        if new_expiry is None:
            _refuse_expired(selected)
        outcome = Outcome("replay", matched=len(selected), dry_run=dry_run, to_queue=to_queue)
        if dry_run:  # which tasks it would replay, as a bulk retry's dry run lists them
            outcome.task_ids = [e.task_id or e.id for e in selected]
            return outcome
        step = BATCH if rate is None else max(1, min(BATCH, int(rate)))
        started = time.monotonic()
        for queue, batch in _batches_per_queue(selected, step):
            done = self._replay_batch(queue, batch, to_queue or queue, reason, new_expiry)
            outcome.done += len(done)
            outcome.skipped += len(batch) - len(done)
            outcome.task_ids += [task_id for task_id in done if task_id]
            if progress is not None:
                progress(len(batch))
            if rate is not None:
                ahead = (outcome.done + outcome.skipped) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        if to_queue:
            self.data.note_queue(to_queue)
        given = from_epoch_ms(new_expiry) if new_expiry else None
        extra = {} if new_expiry is None else {"expires": given.isoformat() if given else None}
        self._audit("replay", outcome, reason, flt, ids, **extra)
        return outcome

    def _replay_batch(
        self, queue: str, batch: list[DeadLetter], target: str, reason: str,
        new_expiry: int | None = None,
    ) -> list[str]:  # fmt: skip
        now = int(time.time() * 1000)
        pairs = reply_pairs(self.data.claim_dead(queue, [e.id for e in batch], now,
                                                 STALE_CLAIM_MS))  # fmt: skip
        if not pairs:
            return []
        entries = {e.id: e for e in batch}
        history.reopen(self.ops, [
            (task_id, {"actor": self.actor, "reason": reason, "queue": target, "from_queue": queue,
                       "dead_letter_reason": entries[message_id].reason})
            for message_id, task_id in pairs if task_id
        ])  # fmt: skip
        releases: list[Any] = []
        bodies = self.data.bodies(queue, [m for m, _ in pairs]) if new_expiry is not None else {}
        for message_id, _ in pairs:
            body = bodies.get(message_id)
            if body is None:
                releases += [message_id, "", ""]
            else:  # the operator's new expiry (0: none)
                releases += [message_id, with_expiry(body, new_expiry or 0), new_expiry or 0]
        self.data.release_dead(queue, target, now, releases)
        return [task_id or message_id for message_id, task_id in pairs]

    # -- delete and purge ----------------------------------------------------------------------

    def delete(
        self, ids: Iterable[str], *, reason: str = "", progress: Progress | None = None
    ) -> Outcome:
        """Delete the named entries (message or task ids) for good."""
        return self._remove("delete", self._select(ids, None, False), reason, None, ids, progress)

    def purge(
        self,
        flt: Filter | None = None,
        *,
        older_than: float | None = None,
        everything: bool = False,
        dry_run: bool = False,
        reason: str = "",
        progress: Progress | None = None,
    ) -> Outcome:
        """Delete every entry matching the filter and/or older than ``older_than`` seconds."""
        if older_than is not None:
            if not 0 <= older_than <= parsing.LONGEST:
                raise InvalidRequest(f"older_than must be 0 to {parsing.LONGEST} seconds, got "
                                     f"{older_than}")  # fmt: skip
            cutoff = from_epoch(time.time() - older_than)
            assert cutoff is not None
            base = flt or Filter()
            until = cutoff if base.until is None else min(base.until, cutoff)
            flt = Filter(**{**base.as_dict(), "until": until})
        selected = self._select(None, flt, everything)
        if dry_run:
            return Outcome("purge", matched=len(selected), dry_run=True)
        return self._remove("purge", selected, reason, flt, None, progress)

    def _remove(
        self,
        action: str,
        selected: list[DeadLetter],
        reason: str,
        flt: Filter | None,
        ids: Iterable[str] | None,
        progress: Progress | None,
    ) -> Outcome:
        outcome = Outcome(action, matched=len(selected))
        for queue, batch in _batches_per_queue(selected, BATCH):
            pairs = reply_pairs(self.data.delete_dead(queue, [e.id for e in batch]))
            outcome.done += len(pairs)
            outcome.skipped += len(batch) - len(pairs)
            outcome.task_ids += [t or m for m, t in pairs]
            detail = {"actor": self.actor, "reason": reason, "action": action, "queue": queue}
            history.record(self.ops, lifecycle.DEAD_LETTER_DELETED, [t for _, t in pairs], detail)
            if progress is not None:
                progress(len(batch))
        self._audit(action, outcome, reason, flt, ids)
        return outcome

    def _audit(
        self,
        action: str,
        outcome: Outcome,
        reason: str,
        flt: Filter | None,
        ids: Iterable[str] | None,
        **extra: Any,
    ) -> None:
        detail: dict[str, Any] = {"matched": outcome.matched, "done": outcome.done,
                                  "skipped": outcome.skipped, **extra}  # fmt: skip
        if outcome.to_queue:
            detail["to_queue"] = outcome.to_queue
        if flt is not None and not flt.is_empty:
            detail["filter"] = flt.as_dict()
        detail["task_ids"] = outcome.task_ids[:1000]
        target = "dead letters " + (
            ",".join(ids) if ids else "matching the filter" if flt else "(all)"
        )
        self.ops.audit.record(self.actor, f"dlq.{action}", target[:500], reason, **detail)

    # -- retention ---------------------------------------------------------------------------

    def trim(self, queues: Iterable[str] | None = None) -> dict[str, int]:
        """Apply the configured retention (``transport.retention``); trimmed counts per queue.

        Consuming workers apply it on every heartbeat; the control plane calls this too."""
        trimmed = {}
        for queue in queues if queues is not None else self.ops.queues.names():
            n = self.data.trim_dead(queue)
            if n:
                trimmed[queue] = n
        return trimmed


#: the longest new expiry a replay may give (as the longest countdown a submit takes)
MAX_EXPIRY_SECONDS = 366 * 86400


def _new_expiry(expires: datetime | float | None, clear: bool) -> int | None:
    """The replayed messages' new expiry in epoch ms (0: none), or None to leave it."""
    if clear and expires is not None:
        raise InvalidRequest("give a new expiry (expires) or clear it (clear_expiry), not both")
    if clear:
        return 0
    if expires is None:
        return None
    now = time.time()
    at = expires.timestamp() if isinstance(expires, datetime) else now + float(expires)
    if not now < at <= now + MAX_EXPIRY_SECONDS:
        raise InvalidRequest("expires must be later than now and at most 366 days ahead (a "
                             "time, or seconds from now)")  # fmt: skip
    return int(at * 1000)


def _refuse_expired(selected: list[DeadLetter]) -> None:
    """Entries whose expiry passed would expire again the moment they are replayed."""
    now = datetime.now(UTC)
    expired = [e for e in selected if e.expired(now)]
    if not expired:
        return
    first = expired[0]
    when = first.expires_at.isoformat() if first.expires_at else "before delivery"
    raise InvalidRequest(
        f"{len(expired)} of the {len(selected)} dead letter(s) to replay have expired (task "
        f"{first.task_id or first.id} expired at {when}): replayed as they are, they would "
        "expire again at once. Give them a new expiry (`--expires 1h` or a time; API field "
        "`expires`) or clear it (`--clear-expiry`; `clear_expiry`), or leave them out."
    )


def _batches_per_queue(
    entries: list[DeadLetter], size: int
) -> Iterator[tuple[str, list[DeadLetter]]]:
    """The entries grouped by queue (scripts run on one queue's keys), ``size`` at a time."""
    by_queue: dict[str, list[DeadLetter]] = {}
    for entry in entries:
        by_queue.setdefault(entry.queue, []).append(entry)
    for queue, queued in by_queue.items():
        for start in range(0, len(queued), size):
            yield queue, queued[start : start + size]
