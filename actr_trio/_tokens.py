"""Random request ids and trace contexts, cut from one pooled ``os.urandom`` read.

``secrets.token_hex`` is a system call per id, a visible part of an in-process tell; reading
4 KiB at once and slicing it gives the same unpredictable bits at a fraction of the cost. A
forked child drops the pool it inherited, so parent and child never hand out the same ids.
"""

from __future__ import annotations

import os
from typing import Final

# Bytes read from the OS at once: 256 request ids.
POOL_BYTES: Final = 4096


class _Pool:
    __slots__ = ("hex", "offset")

    def __init__(self) -> None:
        self.hex = ""
        self.offset = 0

    def take(self, chars: int) -> str:
        start = self.offset
        end = start + chars
        if end > len(self.hex):
            self.hex = os.urandom(POOL_BYTES).hex()
            start, end = 0, chars
        self.offset = end
        return self.hex[start:end]

    def drop(self) -> None:
        self.hex = ""
        self.offset = 0


_pool: Final = _Pool()
os.register_at_fork(after_in_child=_pool.drop)


def request_id() -> str:
    """128 random bits as 32 hex characters: unique across restarts, and unpredictable, so a
    peer that saw some of a node's request ids cannot guess the next one."""
    return _pool.take(32)


def traceparent() -> str:
    """A W3C traceparent that starts a new trace: random 128-bit trace id and 64-bit parent id,
    flagged sampled (a node downstream that records spans records its part of the trace)."""
    ids = _pool.take(48)
    return f"00-{ids[:32]}-{ids[32:]}-01"
