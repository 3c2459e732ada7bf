"""A durable sender process: ``python netsender.py send|recover DATA_DIR --signaling URL``.

``send``: make N concurrent calls to the itest node and print ``in flight`` once they are all
outstanding (recorded in the outbox and on the wire), as ``in flight over LANE`` (the lane of
its link to the node, as ``statistics().links`` says); then wait to be killed.
``recover``: start on the same data dir, print ``recovered N`` once the outbox was resent.
``--listen HOST:PORT`` takes direct WebSocket links (``Config.listen``).
"""

from __future__ import annotations

import argparse
from functools import partial

import trio

from actr_trio import ActrSystem, ActrType, Workload
from actr_trio.testing import find, network_config

N = 8


class Sender(Workload):
    actr_type = ActrType("itest", "sender")


async def main(mode: str, data_dir: str, url: str, listen: str | None) -> None:
    config = network_config(url, realm="itest", data_dir=data_dir, listen=listen)
    async with ActrSystem(config).attach(Sender()).start() as ref:
        if mode == "send":
            target = await find(ref, ActrType("itest", "node"))
            async with trio.open_nursery() as nursery:
                for i in range(N):
                    nursery.start_soon(
                        partial(ref.call, target, "itest.Node.Record", b"%d" % i, timeout=120)
                    )
                with trio.fail_after(60):
                    # The runtime has no event for "N calls on the wire": a bounded poll.
                    while (  # noqa: ASYNC110
                        ref.statistics().outbound.calls_waiting < N
                        or target not in ref.statistics().links
                    ):
                        await trio.sleep(0.01)
                print(f"in flight over {ref.statistics().links[target]}", flush=True)
                await trio.sleep_forever()
        else:
            with trio.fail_after(60):
                await ref.wait_recovered()
            print(f"recovered {ref.statistics().outbound.recovered}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("send", "recover"))
    parser.add_argument("data_dir")
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--listen", help="Config.listen: take direct WebSocket links here")
    args = parser.parse_args()
    trio.run(main, args.mode, args.data_dir, args.signaling, args.listen)
