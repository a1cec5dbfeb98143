"""Dead letters: list, show, count, replay, delete and purge — one API for every tool.

The broker keeps each queue's dead letters beside its other messages (``tq:{q}:dead``, scored
by the time the message died), with its envelope (as published; for a failed task that was
acknowledged on start, as Celery rebuilds it), the reason, the detail and the counts. The
CLI (``taskqueue dlq``), the REST API and the admin UI all call :class:`DeadLetters`; every
mutating call records an audit entry with the actor and the reason, and tells the result
backend (when this process has one) so the task's history shows it.

A replay claims its entries atomically (``dlq_claim.lua``), so two replayers racing on one
entry replay it once; it then reopens the tasks' results, and only then releases the
messages to their queue (``dlq_release.lua``), so a replayed task that runs at once is never
mistaken for a late event of its earlier, failed run.
"""

from ..errors import InvalidRequest
from .dead_letters import DeadLetters
from .entries import REASONS, DeadLetter, Filter, Outcome, Page, Stats

__all__ = [
    "REASONS", "DeadLetter", "DeadLetters", "Filter", "InvalidRequest", "Outcome", "Page",
    "Stats",
]  # fmt: skip
