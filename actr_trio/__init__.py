"""actr_trio: actr actor nodes on Trio.

Layers (imports only go downwards; the inner ring never imports transport/ or signaling/)::

    actr_trio/__init__.py      public re-exports only
    errors.py                  the public error tree
    testing/                   LocalRealm, fixtures, transport conformance suite
    _node.py _context.py       lifecycle (ActrSystem -> ActrNode -> ActrRef) and Context
    _ingate.py _outgate.py     middle ring: inbound gate, outbound gate
    _mailbox.py _scheduler.py  state path: durable mailbox, biased-priority scheduler
    _router.py                 Workload, @route, dispatch
    _streams.py _tracks.py _fastlane.py   fast path: FLG1 streams, FLG2 media
    _link.py _envelope.py      sans-IO: link reliability, packet codec
    _config.py _ids.py _lanes.py   values
    transport/                 Transport protocol, loopback, WebRTC (the only asyncio user)
    signaling/                 WebSocket signaling server and client
    codegen/                   `actr-trio codegen`
"""

from . import errors as errors
from ._config import Config as Config
from ._context import Context as Context
from ._ids import ActrId as ActrId
from ._ids import ActrType as ActrType
from ._lanes import Lane as Lane
from ._lanes import Priority as Priority
from ._node import ActrNode as ActrNode
from ._node import ActrRef as ActrRef
from ._node import ActrSystem as ActrSystem
from ._node import NodeStatistics as NodeStatistics
from ._router import Workload as Workload
from ._router import route as route
from ._streams import StreamChunk as StreamChunk
from ._streams import StreamRegistry as StreamRegistry
from ._streams import StreamSender as StreamSender
from ._supervisor import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorGaveUp as SupervisorGaveUp
from ._supervisor import SupervisorStatistics as SupervisorStatistics
from ._tracks import MediaFrame as MediaFrame
from ._tracks import TrackRegistry as TrackRegistry

__all__ = [
    "ActrId",
    "ActrNode",
    "ActrRef",
    "ActrSystem",
    "ActrType",
    "Config",
    "Context",
    "Lane",
    "MediaFrame",
    "NodeStatistics",
    "Priority",
    "Strategy",
    "StreamChunk",
    "StreamRegistry",
    "StreamSender",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorStatistics",
    "TrackRegistry",
    "Workload",
    "errors",
    "route",
]
__version__ = "0.1.0"
