"""A stock Celery project (`celery -A examples.proj worker`); `celeryconfig` selects the broker."""

from examples.proj.celery import app

__all__ = ["app"]
