"""Dead-letter retention: by count per queue and by age, never silent.

Off by default (dead letters stay until an operator acts). With ``dead_letter_max_count`` or
``dead_letter_max_age`` set, each consuming worker trims its queues on every heartbeat and
the tools can trim on demand; every removed entry is counted in the queue's ``dead_trimmed``
total (exported by the control plane) and logged with its task id and reason.
"""

from __future__ import annotations

import logging
import time

from redis import Redis

from .keys import QueueKeys
from .options import BrokerOptions
from .replies import as_text
from .scripts import Scripts

logger = logging.getLogger(__name__)


def trim_queue(
    client: Redis, scripts: Scripts, prefix: str, options: BrokerOptions, queue: str
) -> int:
    """Trim one queue's dead letters to the configured limits; how many went."""
    if not options.dead_letter_max_count and not options.dead_letter_max_age:
        return 0
    keys = QueueKeys(prefix, queue)
    max_age = options.dead_letter_max_age
    min_dead_at = int((time.time() - max_age) * 1000) if max_age else 0
    gone = scripts["dlq_trim"](
        keys=[keys.dead, keys.state],
        args=[keys.base, options.dead_letter_max_count, min_dead_at],
        client=client,
    )
    n = len(gone) // 3
    if n:
        shown = ", ".join(
            f"{as_text(gone[i + 1]) or as_text(gone[i])} ({as_text(gone[i + 2])})"
            for i in range(0, min(len(gone), 30), 3)
        )
        logger.warning(
            "dead-letter retention on queue %r removed %d entr%s (dead_letter_max_count=%s, "
            "dead_letter_max_age=%ss): %s%s",
            queue, n, "y" if n == 1 else "ies", options.dead_letter_max_count or "-",
            max_age or "-", shown, ", ..." if n > 10 else "",
        )  # fmt: skip
    return n
