"""actr_trio: actr actor nodes on Trio.

A node hosts one workload (an actor), registers with a signaling server, and talks to other
nodes peer to peer over WebRTC. Requests and tells land in a durable SQLite mailbox and are
handled one at a time, highest priority first; stream chunks and media frames take a concurrent
fast path. A minimal node::

    import trio
    from actr_trio import ActrSystem, ActrType, Config, Context, Workload, route

    class Echo(Workload):
        actr_type = ActrType("acme", "echo")

        @route("demo.Echo.Echo")
        async def echo(self, request: bytes, ctx: Context) -> bytes:
            return request

    async def main() -> None:
        config = Config(realm="demo", signaling_url="ws://127.0.0.1:8765",
                        data_dir="./echo-data", ice_addresses=("127.0.0.1",))
        async with ActrSystem(config).attach(Echo()).start() as ref:
            await ref.wait_for_shutdown()  # Ctrl-C / SIGTERM: graceful shutdown

    trio.run(main)

Run a signaling server beside it with ``actr-trio signaling --host 127.0.0.1 --port 8765``.

Documentation, in the repository's ``docs/`` folder: ``getting-started.md`` (install, a
two-process app), ``testing.md`` (pytest-trio, ``LocalRealm``, fault injection),
``architecture.md`` (guarantees, lifecycle, wire protocol) and ``operations.md`` (data
directory, signaling server, logging, configuration reference).

Main names:

* ``Workload``, ``route``: what a node hosts and how its handlers are declared.
* ``ActrSystem`` -> ``ActrNode`` -> ``ActrRef``: build, start and hold a running node.
* ``Context``: what a handler gets (``call``, ``tell``, ``discover``, ``open_stream``, ...).
* ``Config``, ``ActrId``, ``ActrType``, ``Priority``, ``Lane``: values.
* ``Acl``, ``AclRule``: which callers a node accepts (``Config.acl`` or a workload's ``acl``).
* ``errors``: every exception the library raises (root ``errors.ActrError``).
* ``Supervisor``, ``Strategy``: several nodes in one process, restarted when they crash.
* ``actr_trio.testing``: ``LocalRealm``, the ``local_realm`` pytest fixture, ``FaultyTransport``.
* ``actr_trio.signaling``: the signaling server, embeddable (``serve``).

For maintainers: the package is layered, and imports only go downwards; the inner ring
(mailbox, scheduler, router, gates, fast path) never imports ``transport/`` implementations or
``signaling/``. ``docs/architecture.md`` has the module map; ``tests/unit/test_public_api.py``
checks the rules.
"""

from . import errors as errors
from ._acl import Acl as Acl
from ._acl import AclRule as AclRule
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
    "Acl",
    "AclRule",
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
