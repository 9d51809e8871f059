"""Storage backends behind the ``Storage`` seam: SQLite (durable default) and in-memory."""

from p2pindex.storage.base import Hint, HintBacklog, Storage
from p2pindex.storage.memory import MemoryStorage
from p2pindex.storage.sqlite import SqliteStorage

__all__ = ["Hint", "HintBacklog", "MemoryStorage", "SqliteStorage", "Storage"]
