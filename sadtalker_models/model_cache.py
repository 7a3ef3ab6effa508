"""The one explicit cache of loaded models.

Loading the SadTalker file takes seconds and ~700 MB, so nodes and the CLI ask this cache
instead of loading again. A key names everything that makes two loads different: the files
(path, size and modification time, so a replaced file is reloaded), the device and the dtype.

``MODEL_CACHE`` is the process-wide instance (the only module-level state of the library): the
SadTalker networks (kinds ``sadtalker``, ``comfy-sadtalker``) and the landmark detectors (kind
``face detector``, see :func:`.face.landmarks.make_landmark_detector`) live there. Pass another
:class:`ModelCache` where isolation is wanted (tests).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

logger = logging.getLogger(__name__)


def file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """(resolved path, byte size, mtime in ns) of a file; a missing file keys as (path, -1, -1)."""
    path = Path(path)
    try:
        resolved = path.resolve()
        stat = resolved.stat()
        return (str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return (str(path), -1, -1)


def make_key(kind: str, files: Iterable[str | os.PathLike], device: Any, dtype: Any, *extra: Hashable) -> tuple:
    """Cache key for ``kind`` of model loaded from ``files`` onto ``device`` in ``dtype``."""
    return (kind, tuple(file_key(f) for f in files), str(device), str(dtype), *extra)


def describe(key: tuple) -> str:
    """What a :func:`make_key` key loads, for log messages: the file names, device and dtype
    (``SadTalker_V0.0.2_256.safetensors (cpu, torch.float32)``); other keys by their first item."""
    files = key[1] if len(key) > 3 and isinstance(key[1], tuple) else ()
    names = [os.path.basename(f[0]) for f in files if isinstance(f, tuple) and f and isinstance(f[0], str)]
    if not names:
        return str(key[0])
    return f"{', '.join(names)} ({key[2]}, {key[3]})"


class ModelCache:
    """A small LRU map from keys to loaded models, safe to use from several threads.

    ``max_items`` bounds how many different model sets of one kind (a key's first item) stay
    loaded (default 2: e.g. the 256 and 512 checkpoints, or one on each device); kinds do not
    evict each other, so a landmark detector never pushes out the SadTalker networks.
    """

    def __init__(self, max_items: int = 2):
        self.max_items = max_items
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0
        self.hits = 0

    def get_or_load(self, key: tuple, loader: Callable[[], Any]) -> Any:
        """The cached value for ``key``, or ``loader()`` stored under it."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            logger.info("Loading %s", describe(key))
            value = loader()
            self.loads += 1
            self._items[key] = value
            same_kind = [k for k in self._items if k[0] == key[0]]   # least recently used first
            for old_key in same_kind[:max(0, len(same_kind) - self.max_items)]:
                del self._items[old_key]
                logger.info("Dropping cached %s", describe(old_key))
            return value

    def get(self, key: tuple) -> Any | None:
        with self._lock:
            return self._items.get(key)

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def values(self) -> list[Any]:
        with self._lock:
            return list(self._items.values())

    def clear(self, kind: str | None = None) -> None:
        """Forget every cached model, or those of ``kind`` (their memory is freed once nothing else
        refers to them)."""
        with self._lock:
            for key in [k for k in self._items if kind is None or k[0] == kind]:
                del self._items[key]


#: The process-wide cache used by the nodes and the CLI.
MODEL_CACHE = ModelCache()
