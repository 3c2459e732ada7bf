"""A node process for the identity tests: ``python idnode.py NAME --signaling URL --data-dir D``.

Prints ``registered ACTR_ID KEY_ID`` once started (KEY_ID: its node key's id) and serves
``id.Node.Name`` (answers NAME). If the node cannot start it prints ``failed ERROR: message``
and exits with status 3. The realm secret comes from ``ACTR_REALM_SECRET`` (never argv), the
trust anchor from ``--trust-anchor``. Log lines go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from actr_trio import ActrSystem, ActrType, Config, Context, Workload, route
from actr_trio.errors import ActrError


class IdNode(Workload):
    actr_type = ActrType("itest", "id")

    def __init__(self, name: str) -> None:
        self.name = name

    @route("id.Node.Name")
    async def whoami(self, request: bytes, ctx: Context) -> bytes:
        return self.name.encode()


async def serve(args: argparse.Namespace) -> None:
    config = Config(
        realm="itest",
        signaling_url=args.signaling,
        realm_secret=os.environ.get("ACTR_REALM_SECRET"),
        data_dir=args.data_dir,
        trust_anchor=args.trust_anchor,
        ice_addresses=("127.0.0.1",),
    )
    async with ActrSystem(config).attach(IdNode(args.name)).start() as ref:
        key_id = ref._core.session.node_key.key_id
        print(f"registered {ref.actr_id} {key_id}", flush=True)
        await ref.wait_for_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--trust-anchor")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    try:
        trio.run(serve, args)
    except ActrError as exc:
        print(f"failed {type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
