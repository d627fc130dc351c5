"""Peak memory of the current process, for the benchmark scripts (imported from their folder)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_of_this_process_mib() -> float:
    """VmHWM of /proc/self/status (MiB): this process's own peak. ``getrusage`` is not used: on Linux
    its ``ru_maxrss`` survives fork + exec, so a spawned child reports its parent's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
