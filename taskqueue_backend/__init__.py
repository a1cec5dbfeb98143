"""taskqueue_backend: a Celery broker over Redis sorted sets, a result backend, shared operations.

The broker transport lives in ``taskqueue_backend.transport`` and registers its own kombu
aliases when imported; this package root deliberately imports nothing heavy.
"""

__version__ = "0.1.0"
