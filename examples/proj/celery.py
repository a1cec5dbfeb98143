"""The Celery app of the example project, exactly as any Celery project defines it."""

from celery import Celery

app = Celery("proj", include=["examples.proj.tasks"])
app.config_from_object("examples.proj.celeryconfig")
