"""Test suite; a package so that worker subprocesses can import ``tests.app``."""
