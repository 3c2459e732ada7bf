"""Testing kit: run nodes in one process, and check transports against the contract.

* :class:`LocalRealm`: in-memory signaling + loopback transport, real lifecycle, mailbox and
  scheduler.
* pytest fixtures (installed as a pytest plugin): ``local_realm``.
"""

from ._faults import FaultStatistics, FaultyTransport, TransportWrapper
from ._memory_signaling import MemoryConnector, MemorySession, MemorySignaling
from ._pair import add_pair_arguments, find, network_config, pair_main, run_pair, serve_worker
from ._realm import LocalRealm

__all__ = [
    "FaultStatistics",
    "FaultyTransport",
    "LocalRealm",
    "MemoryConnector",
    "MemorySession",
    "MemorySignaling",
    "TransportWrapper",
    "add_pair_arguments",
    "find",
    "network_config",
    "pair_main",
    "run_pair",
    "serve_worker",
]
