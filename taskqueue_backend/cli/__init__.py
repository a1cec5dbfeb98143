"""The ``taskqueue`` command line: thin shells over the shared Python API.

``main`` is the ``taskqueue`` console script; ``dlq`` is also registered with Celery
(``celery.commands``), so ``celery -A proj dlq …`` works with the app's own settings.
"""

from . import database  # noqa: F401 - registers ``taskqueue db``
from .dlq import dlq
from .main import main
from .workers import status, workers

main.add_command(dlq)
main.add_command(workers)
main.add_command(status)

__all__ = ["dlq", "main"]
