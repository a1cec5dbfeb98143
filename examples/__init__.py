"""Examples: a stock Celery project that selects taskqueue-backend through configuration only."""
