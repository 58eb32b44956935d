"""The sample events the sandbox serves by default, shipped inside the package.

They are package data (read with `importlib.resources`), so `--sandbox` works from any
directory in a wheel install; the repository's `sample_data/` links to the same files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path

EVENTS = "events.csv"
USED_KEYS = "used_keys.csv"


@contextlib.contextmanager
def sample_files() -> Iterator[tuple[Path, Path]]:
    """Paths of the sample events and used keys, valid inside the block."""
    data = files("pipeline.sandbox") / "data"
    with as_file(data / EVENTS) as events, as_file(data / USED_KEYS) as used:
        yield Path(events), Path(used)
