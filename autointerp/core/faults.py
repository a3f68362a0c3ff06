"""Deterministic fault injection for the crash-safety tests.

`AUTOINTERP_FAULT=POINT:N:SIGNAL` (e.g. `cache-part-written:3:KILL`) makes the process send itself
SIGNAL (KILL or INT; STOP pauses it until a test sends SIGCONT) the N-th time it passes the named point, so a test kills a real run at an
exact place instead of racing the clock. Several specs may be given, comma-separated (a Ray worker
node started with them dies at whichever it reaches). Unset (always, outside tests) it costs one
dict lookup.

Points:
  cache-part-written      after a cache part's files and its .done marker are in place
  cache-published         after a run's first partial publish (browsable, not yet grown)
  explain-chunk-written   after an explain chunk's explanations part is written
  score-between-writes    after a score chunk's decisions (and intervention) parts, before its scores part
  score-chunk-written     after a score chunk's scores part
  mid-write               inside an atomic file write: data written to the temporary file, not renamed
  compaction-merged       results compaction: the merged part written under its temporary name, nothing recorded
  compaction-recorded     results compaction: the record of what the merged part replaces written, not renamed
  compaction-renamed      results compaction: the merged part in place, the replaced parts still on disk
  compaction-removing     results compaction: the first replaced part deleted, the others not yet
  search-index-saved      the explanation search index: a set's new graph saved under its temporary name, not
                          renamed, its record of embedded texts not yet updated
  worker-chunk-done       in a Ray worker: a unit done (a chunk explained, scored or validated, a cache part
                          written), before its result goes to the driver
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from autointerp.core.errors import AutointerpError

FAULT_ENV = "AUTOINTERP_FAULT"
POINTS = ("cache-part-written", "cache-published", "explain-chunk-written", "score-between-writes", "score-chunk-written",
          "mid-write", "compaction-merged", "compaction-recorded", "compaction-renamed", "compaction-removing",
          "search-index-saved", "worker-chunk-done")
_SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "STOP": signal.SIGSTOP}
_passes: Counter = Counter()


def _parse(spec: str) -> tuple[str, int, signal.Signals]:
    try:
        point, n, sig = spec.split(":")
        if point not in POINTS or sig not in _SIGNALS or int(n) < 1:
            raise ValueError
        return point, int(n), _SIGNALS[sig]
    except ValueError:
        raise AutointerpError(f"{FAULT_ENV}={spec!r} is malformed: use POINT:N:KILL|INT|STOP with POINT one of "
                              f"{', '.join(POINTS)}") from None


def fault_point(name: str) -> None:
    """Signal this process if a fault spec names this point and this is its N-th pass."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for point, n, sig in (_parse(one) for one in spec.split(",")):
        if point != name:
            continue
        _passes[name] += 1
        if _passes[name] == n:
            # Python runs the SIGINT handler (KeyboardInterrupt) in the main thread before its next
            # bytecode, so the interrupt lands here; from a worker thread it lands in the main thread.
            os.kill(os.getpid(), sig)
        return
