"""Reading a kombu message envelope: what the broker needs to know to place it.

The stored body is the envelope exactly as published. The copy handed to a consumer carries
its delivery tag, the redelivered flag and this broker's delivery metadata in its properties
(``headers.py``); its headers are the published ones, plus ``delivery_count`` on a redelivery.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import headers as delivery
from ..clock import now_ms
from .keys import QueueKeys
from .options import BrokerOptions


class MalformedMessage(ValueError):
    """A stored message is not a kombu envelope (JSON object with properties)."""


def eta_ms(message: dict[str, Any]) -> int:
    """The ETA/countdown of a Celery message in epoch ms, or 0 (naive times are UTC)."""
    headers = message.get("headers") or {}
    eta = headers.get("eta") if isinstance(headers, dict) else None
    if not eta:
        return 0
    if isinstance(eta, str):
        try:
            when = datetime.fromisoformat(eta)
        except ValueError as exc:
            raise ValueError(f"message has an ETA that is not an ISO 8601 time: {eta!r}") from exc
    elif isinstance(eta, datetime):
        when = eta
    else:
        raise ValueError(f"message has an ETA that is not an ISO 8601 time: {eta!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def expire_at_ms(message: dict[str, Any], now: int) -> int:
    """Absolute expiry (epoch ms) from the AMQP-style relative ``expiration`` (ms), or 0."""
    expiration = message.get("properties", {}).get("expiration")
    if expiration is None or expiration == "":
        return 0
    try:
        ttl = float(expiration)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"message expiration must be milliseconds, got {expiration!r}") from exc
    return now + max(int(ttl), 0)


def with_expiry(body: bytes | str, expire_at: int) -> str:
    """A stored envelope with a new expiry (epoch ms; 0: none): Celery's ``expires`` header
    and the AMQP-style ``expiration`` property (ms from now) say the same as ``expire_at``."""
    from kombu.utils.json import dumps

    payload = json.loads(body)
    headers = payload.get("headers")
    properties = payload.setdefault("properties", {})
    if expire_at:
        if isinstance(headers, dict):
            headers["expires"] = datetime.fromtimestamp(expire_at / 1000, UTC).isoformat()
        properties["expiration"] = str(max(expire_at - now_ms(), 0))
    else:
        if isinstance(headers, dict):
            headers["expires"] = None
        properties.pop("expiration", None)
    return str(dumps(payload))


def expires_at(headers: dict[str, Any], stored: datetime | None = None) -> datetime | None:
    """When a stored message expires: Celery's ``expires`` header, else the broker's own
    expiry (``stored``, from the publish's ``expiration``); naive times are UTC."""
    found = headers.get("expires")
    if isinstance(found, str) and found:
        try:
            when = datetime.fromisoformat(found)
        except ValueError:
            return stored
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return stored


def task_id(message: dict[str, Any]) -> str:
    headers = message.get("headers") or {}
    found = headers.get("id") if isinstance(headers, dict) else None
    if not found:
        found = message.get("properties", {}).get("correlation_id")
    return str(found) if found else ""


def publish_fields(message: dict[str, Any], options: BrokerOptions) -> dict[str, Any]:
    """Everything ``publish.lua`` needs besides the body; raises on invalid input."""
    priority = message.get("properties", {}).get("priority")
    rank = options.rank(priority)
    now = now_ms()
    return {
        "rank": rank,
        "priority": options.priority_of(rank),
        "task_id": task_id(message),
        "due": eta_ms(message),
        "expire_at": expire_at_ms(message, now),
        "now": now,
    }


def publish_call(
    keys: QueueKeys, message_id: str, body: str | bytes, fields: dict[str, Any]
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``publish.lua`` for one message."""
    return [keys.ready], [
        message_id, body, fields["rank"], fields["task_id"], fields["due"],
        fields["expire_at"], fields["now"], fields["priority"],
    ]  # fmt: skip


@dataclass(frozen=True)
class Leased:
    """One message of a fetch reply (``fetch.lua``)."""

    message_id: str
    body: bytes
    deliveries: int
    published_at_ms: int | None
    replays: int
    replayed_at_ms: int | None  # the last replay from the dead letters


def for_delivery(leased: Leased, queue: str) -> dict[str, Any]:
    """Decode a stored envelope and mark the copy handed to the consumer."""
    try:
        payload = json.loads(leased.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"message is not JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
        raise MalformedMessage("message is not a kombu envelope (no 'properties' object)")
    props = payload["properties"]
    props["delivery_tag"] = leased.message_id
    info = props.get("delivery_info")
    if not isinstance(info, dict):
        info = props["delivery_info"] = {}
    info["redelivered"] = leased.deliveries > 1
    props[delivery.QUEUE] = queue  # where the message is leased (see failures.copy_leased)
    # when this worker got it: the result backend's "received", without a database write on
    # the worker's event loop
    props[delivery.DELIVERED_AT] = time.time()
    props[delivery.DELIVERIES] = leased.deliveries
    props[delivery.PUBLISHED_AT] = leased.published_at_ms
    props[delivery.REPLAYS] = leased.replays
    props[delivery.QUEUED_AT] = leased.replayed_at_ms or leased.published_at_ms
    headers = payload.get("headers")
    if leased.deliveries > 1 and isinstance(headers, dict):
        headers[delivery.DELIVERY_COUNT] = leased.deliveries
    return payload
