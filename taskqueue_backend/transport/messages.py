"""Reading a kombu message envelope: what the broker needs to know to place it.

The stored body is the envelope exactly as published; only the copy handed to the
consumer carries the delivery tag, the redelivered flag and the delivery count.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from .options import BrokerOptions


class MalformedMessage(ValueError):
    """A stored message is not a kombu envelope (JSON object with properties)."""


def now_ms() -> int:
    return int(time.time() * 1000)


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


def for_delivery(body: bytes, message_id: str, deliveries: int, queue: str = "") -> dict[str, Any]:
    """Decode a stored envelope and mark the copy handed to the consumer."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"message is not JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
        raise MalformedMessage("message is not a kombu envelope (no 'properties' object)")
    props = payload["properties"]
    props["delivery_tag"] = message_id
    props["tq_queue"] = queue  # where the message is leased (see failures.copy_leased)
    info = props.get("delivery_info")
    if not isinstance(info, dict):
        info = props["delivery_info"] = {}
    info["redelivered"] = deliveries > 1
    headers = payload.get("headers")
    if isinstance(headers, dict):
        headers["delivery_count"] = deliveries
        # when this worker got it: the result backend's "received", without a database
        # write on the worker's event loop
        headers["tq_delivered_at"] = time.time()
    return payload
