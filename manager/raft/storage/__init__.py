"""Durable storage for the Raft core: the in-memory reference (simulation) and the disk one."""
from .memory import MemoryStorage, StorageError, StoredLog

__all__ = ["MemoryStorage", "StorageError", "StoredLog"]
