"""The durable outbox: the only owner of the gateway's durable data (see :mod:`.outbox`)."""

from edge.outbox.outbox import Outbox, OutboxCounters
from edge.outbox.ranges import Ranges, complement, contains, covers, intersect, merge, subtract
from edge.outbox.reader import Summary, iter_unsent, summarize
from edge.outbox.schema import OutboxError

__all__ = [
    "Outbox",
    "OutboxCounters",
    "OutboxError",
    "Ranges",
    "Summary",
    "complement",
    "contains",
    "covers",
    "intersect",
    "iter_unsent",
    "merge",
    "subtract",
    "summarize",
]
