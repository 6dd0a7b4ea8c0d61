"""A compact set of the names an import has met (duplicate detection)."""

from __future__ import annotations

from array import array


class SeenNames:
    """The names met so far, as 64-bit hashes in one flat array (open addressing).

    Why not a set: a set of the names keeps every string alive, and even a
    set of their hashes holds several times this array's bytes per name, so
    a multi-million-row import would hold gigabytes; the cost is a little
    time per row (bench/seen_names.py measures both; figures in
    docs/performance.md). Two different names share a 64-bit hash with
    probability ~n²/2^65 (3e-8 for a million rows); Python randomises the
    hash per process, so such a false "duplicate" would not repeat on a retry.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._slots = array("q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def add(self, name: str) -> bool:
        """Record ``name``; return True when it was already there."""
        value = hash(name) or 1  # 0 marks a free slot
        slots, mask = self._slots, self._mask
        index = value & mask
        while True:
            current = slots[index]
            if current == 0:
                break
            if current == value:
                return True
            index = (index + 1) & mask
        slots[index] = value
        self._count += 1
        if self._count * 2 > mask:
            self._grow()
        return False

    def _grow(self) -> None:
        old = self._slots
        capacity = len(old) * 2
        self._slots = slots = array("q", bytes(8 * capacity))
        self._mask = mask = capacity - 1
        for value in old:
            if value:
                index = value & mask
                while slots[index]:
                    index = (index + 1) & mask
                slots[index] = value
