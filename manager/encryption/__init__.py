"""Encryption at rest for a manager's state (Swarm's autolock).

Two layers, as in Swarm:
- a data-encryption key (DEK) seals every Raft WAL record and snapshot (`aead.py`), and,
  while autolock is on, the node's TLS private key;
- the DEK is stored on disk (`keyfile.py`) either as is (autolock off) or wrapped by a
  key-encryption key (KEK): the cluster's unlock key (`unlockkey.py`), replicated through
  Raft so every manager uses the same one, and never written to a manager's own disk. A
  manager that restarts with a wrapped DEK stays locked until someone gives it the key.
"""
from .aead import Crypter, DataKey, DecryptError
from .keyfile import KeyFile, KeyFileError, RaftKeys
from .unlockkey import InvalidUnlockKey, new_unlock_key, parse_unlock_key

__all__ = ["Crypter", "DataKey", "DecryptError", "InvalidUnlockKey", "KeyFile", "KeyFileError", "RaftKeys",
           "new_unlock_key", "parse_unlock_key"]
