"""``taskqueue loadtest``: a load test of a broker with real workers, and a comparison with
kombu's stock Redis transport in the same run.

The parts, one module each:

- ``app``: the Celery app of a run (built from ``LoadtestConfig``, passed to workers through
  ``TQ_LOADTEST_*`` environment variables) and its one task, ``taskqueue.loadtest.work``,
  which sleeps, records ``{seq, priority, fail, published_at, started_at, finished_at, pid}``
  in the run's Redis list and raises when asked to; ``worker_app`` is the module the workers
  load (``celery -A taskqueue_backend.loadtest.worker_app worker``);
- ``runner``: one run on one transport (start stock ``celery worker`` subprocesses, publish
  the plan from threads, wait for the records with a deadline, stop the workers, delete every
  key under the run's prefix);
- ``stats``: the figures of a run (throughput, publish rate, latency percentiles, priority
  inversions, lost, duplicates, failures) and their definitions;
- ``report``: the side-by-side table with ratios, and the JSON report.

Every key a run creates starts with ``<--keyprefix>tqload-<run id>:<transport>:``: the
broker's ``global_keyprefix`` (queues, bindings, leases, dead letters, the consumer registry),
the records list and the readiness set; each transport runs under its own prefix on the same
Redis server and database, one after the other, with the same plan of tasks.
"""

from .app import TASK_NAME, LoadtestConfig, make_app
from .report import document, ratios, render
from .runner import LoadRun, LoadSpec, LoadtestError, plan_tasks
from .stats import PlannedTask, RunData, TaskTiming, count_inversions, percentiles, summarize

__all__ = [
    "TASK_NAME",
    "LoadRun",
    "LoadSpec",
    "LoadtestConfig",
    "LoadtestError",
    "PlannedTask",
    "RunData",
    "TaskTiming",
    "count_inversions",
    "document",
    "make_app",
    "percentiles",
    "plan_tasks",
    "ratios",
    "render",
    "summarize",
]
