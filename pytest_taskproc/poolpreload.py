"""What the fork server of a process pool imports before it forks any worker.

The worker's modules, and the table of installed distributions that every
record names: found once in the server, every worker forked from it inherits
the table instead of reading every distribution's metadata for its first
record.
"""

from __future__ import annotations

from . import worker  # noqa: F401  (imported for the workers to inherit)
from .installed import warm_up

warm_up()
