"""Peak resident memory of this process, for the bench scripts.

``getrusage().ru_maxrss`` is the wrong measure for a child process on Linux: a child made by
fork + exec starts with its parent's high-water mark, so a bench whose parent built the input
data in memory reported that as every child's peak. ``VmHWM`` in ``/proc/self/status`` belongs
to the process's own address space and starts afresh at exec; ``ru_maxrss`` is only the
fallback where there is no ``/proc``.
"""

from __future__ import annotations

import resource
import sys


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started (its own, not its parent's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
