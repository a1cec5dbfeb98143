"""Reading a yes/no setting written as text (an environment variable, a transport option)."""

from __future__ import annotations

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_flag(value: str, name: str) -> bool:
    """``value`` as a bool; ValueError naming ``name`` when it is neither."""
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")
