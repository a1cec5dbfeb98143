"""Reaching the broker: a kombu connection of this transport, kept open for the operations.

Every Redis call of the operations layer goes through ``admin`` (``transport.admin``, the one
owner of the broker's keys, fields and scripts outside the transport's own moves), over the
client of a channel of this transport, so whatever kombu's connection machinery supports
reaches it too: ``redis://``,
``rediss://`` with TLS options, ACL users, database numbers, Sentinel (``sentinel://`` with
``master_name``), failover URLs and ``global_keyprefix``. The channel never consumes: it only
lends its connection pool (thread-safe, so one broker access serves every request thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection
from redis import Redis

from ..selection import TRANSPORT_PATH, uses_taskqueue_broker
from ..transport.admin import BrokerAdmin
from ..transport.options import BrokerOptions
from ..transport.scripts import Scripts
from .errors import InvalidRequest


@dataclass
class BrokerAccess:
    """The broker under one ``global_keyprefix`` of one Redis database."""

    connection: Connection
    client: Redis
    prefix: str
    options: BrokerOptions
    scripts: Scripts
    #: what a client Celery app needs to publish and to send remote control commands here
    celery_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def admin(self) -> BrokerAdmin:
        """The broker's data (dead letters, queues, registry, audit): the only way in."""
        if self._admin is None:
            self._admin = BrokerAdmin(self.client, self.scripts, self.prefix, self.options)
        return self._admin

    _admin: BrokerAdmin | None = field(default=None, init=False, repr=False)

    @classmethod
    def open(
        cls, connection: Connection, celery_settings: dict[str, Any] | None = None
    ) -> BrokerAccess:
        from ..transport.channel import TaskQueueChannel

        channel = connection.default_channel
        if not isinstance(channel, TaskQueueChannel):
            connection.release()
            raise InvalidRequest(
                f"{connection.as_uri()} is not reached through this package's transport; "
                f"set broker_transport = {TRANSPORT_PATH!r}"
            )
        return cls(connection, channel.redis, channel.global_keyprefix, channel.options,
                   channel.scripts, dict(celery_settings or {}))  # fmt: skip

    @classmethod
    def from_url(
        cls,
        url: str,
        transport_options: Mapping[str, Any] | None = None,
        ssl: Any = None,
    ) -> BrokerAccess:
        options = dict(transport_options or {})
        settings = {"broker_url": url, "broker_transport": TRANSPORT_PATH,
                    "broker_transport_options": options, "broker_use_ssl": ssl}  # fmt: skip
        return cls.open(
            Connection(url, transport=TRANSPORT_PATH, transport_options=options, ssl=ssl), settings
        )

    @classmethod
    def from_app(cls, app: Any) -> BrokerAccess:
        """The broker of a Celery app (its URL, transport options, TLS and failover)."""
        if not uses_taskqueue_broker(app):
            raise InvalidRequest(
                f"the broker of app {app.main or app!r} is {app.conf.broker_url!r} with "
                f"broker_transport={app.conf.broker_transport!r}, not this package's: set "
                f"broker_transport = {TRANSPORT_PATH!r}"
            )
        return cls.open(app.connection_for_write())

    def describe(self) -> str:
        """The broker's URL without its password (the first of a list), whether it is a
        Redis Cluster, and the key prefix if any."""
        where = self.connection.as_uri()
        if self.admin.cluster:
            where += " (Redis Cluster)"
        return f"{where} (keyprefix {self.prefix!r})" if self.prefix else where

    def close(self) -> None:
        self.connection.release()
