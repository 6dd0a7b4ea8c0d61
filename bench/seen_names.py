#!/usr/bin/env python
"""Memory and time per name: the import's SeenNames against a set (docs/performance.md).

.venv/bin/python bench/seen_names.py [--names 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from products.services.seen_names import SeenNames


def names(count: int):
    for number in range(count):
        yield f"Classic Oak Chair #{number:07d}"  # a fresh string per row, as read from a file


def seen_names(count: int) -> None:
    seen = SeenNames()
    for name in names(count):
        seen.add(name)
    return seen


def set_of_hashes(count: int) -> set[int]:
    seen: set[int] = set()
    for name in names(count):
        value = hash(name)
        if value not in seen:
            seen.add(value)
    return seen


def set_of_names(count: int) -> set[str]:
    seen: set[str] = set()
    for name in names(count):
        if name not in seen:
            seen.add(name)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    count = parser.parse_args().names
    print("| structure | bytes per name held | peak bytes per name | ns per name (incl. making the string) |")
    print("| --- | ---: | ---: | ---: |")
    for build in (seen_names, set_of_hashes, set_of_names):
        started = time.perf_counter()
        kept = build(count)
        elapsed = time.perf_counter() - started
        del kept
        tracemalloc.start()
        kept = build(count)
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del kept
        print(f"| {build.__name__} | {held / count:.0f} | {peak / count:.0f} | {elapsed / count * 1e9:.0f} |")


if __name__ == "__main__":
    main()
