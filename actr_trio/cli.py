"""``actr-trio``: the command line (signaling server, code generation, demo)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module with add_arguments(parser) and run(args) -> int; imported lazily so that
# `actr-trio codegen` never imports aiortc and `actr-trio signaling` never imports grpc_tools.
_COMMANDS = {
    "signaling": ("actr_trio.signaling._cli", "run the signaling server"),
    "codegen": (
        "actr_trio.codegen._cli",
        "generate protobuf classes, handler bases and client stubs",
    ),
    "demo": ("actr_trio._demo", "run the demo: nodes exchanging RPCs, priorities and a stream"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actr-trio`` command."""
    parser = argparse.ArgumentParser(prog="actr-trio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    module = importlib.import_module(_COMMANDS[args.command][0])
    try:
        result: int = module.run(args)
    except Exception as exc:
        status = _report_actr_error(args.command, exc)
        if status is None:
            raise  # not ours to explain: a bug keeps its traceback
        return status
    return result


def _report_actr_error(command: str, exc: Exception) -> int | None:
    """For an ``ActrError`` (alone, or alone in a group): one line on stderr, then the exit
    status, 2 for a configuration error and 1 otherwise. ``None`` for anything else."""
    from ._groups import sole_exception
    from .errors import ActrError, ConfigError

    error = sole_exception(exc) if isinstance(exc, BaseExceptionGroup) else exc
    if not isinstance(error, ActrError):
        return None
    sys.stderr.write(f"actr-trio {command}: error: {error}\n")
    return 2 if isinstance(error, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
