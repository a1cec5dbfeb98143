"""Configuration of the example project.

The first block is everything an existing Celery app changes to run on taskqueue-backend; the
rest is ordinary Celery configuration.
"""

import os

# --- These lines are all an existing app changes to adopt taskqueue-backend. ---
broker_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
broker_transport = "taskqueue_backend.transport:Transport"
broker_transport_options = {
    # A worker that misses heartbeats for heartbeat_timeout seconds is considered gone and
    # its in-flight messages go back to their queue.
    "heartbeat_interval": 2,
    "heartbeat_timeout": 10,
    # Several apps can share one Redis database, each under its own prefix.
    "global_keyprefix": os.environ.get("BROKER_KEYPREFIX", ""),
}
# Results and every task's history: PostgreSQL (DATABASE_URL, a SQLAlchemy URL such as
# postgresql+psycopg://user:pw@host/db) or, by default, a SQLite file next to the demo.
result_backend = "tq+" + os.environ.get("DATABASE_URL", "sqlite:///taskqueue-demo.db")
taskqueue_table_prefix = os.environ.get("RESULT_TABLE_PREFIX", "tq_")
# --- end of the taskqueue-backend lines. ---

result_extended = True
task_track_started = True
broker_connection_retry_on_startup = True
