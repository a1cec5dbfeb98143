"""The ``taskqueue`` command line: thin shells over the operations layer.

``main`` is the ``taskqueue`` console script; ``dlq`` is also registered with Celery
(``celery.commands``), so ``celery -A proj dlq …`` works with the app's own settings.
Importing this package imports click and the command modules only.
"""

from . import database, db_maintain  # noqa: F401 - register ``taskqueue db``
from .audit import audit
from .dlq import dlq
from .loadtest import loadtest
from .main import main
from .status import history, status
from .workers import workers

main.add_command(dlq)
main.add_command(workers)
main.add_command(status)
main.add_command(history)
main.add_command(loadtest)
main.add_command(audit)

__all__ = ["dlq", "main"]
