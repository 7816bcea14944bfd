"""The aicache file store: `<sha256>.json` entries beside a `.index.json`.

aicache (CoreCache) writes entries with `json.dump(..., indent=2)` on set and compactly on every
read (it bumps `access_count`), and rewrites the whole index after each change: in place, with no
temp file, no rename and no lock. An unparseable index is silently reset to `{}`. So a reader can
catch any file half-written, and two clients lose each other's index updates.

The scan is one pass over the directory. A per-target state file remembers each entry's stat
signature and what was learnt from its bytes, so a rescan reads only files that changed and only
stats the rest. Findings on a subject that changed within the grace period are held back ("settling"):
a file being written right now is not corrupt.
"""

from healing.backends.aicache_fs.checks import Checks
from healing.backends.aicache_fs.format import (
    ENTRY_RE,
    INDEX_NAME,
    STORE,
    STRAY_RE,
    analyze_entry_bytes,
    index_record_for,
    record_disagreement,
)
from healing.backends.aicache_fs.repairs import Journal, Repairs


class AicacheFsBackend(Checks, Repairs):
    """The backend protocol for an aicache CoreCache directory."""

    kind = "aicache_fs"


__all__ = ["ENTRY_RE", "INDEX_NAME", "STORE", "STRAY_RE", "AicacheFsBackend", "Journal", "analyze_entry_bytes", "index_record_for", "record_disagreement"]
