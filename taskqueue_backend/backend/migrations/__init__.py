"""The result backend's Alembic migrations, shipped in the package and run by ``migrate``."""
