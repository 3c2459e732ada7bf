"""``actr-trio codegen``: the command line of :func:`actr_trio.codegen.generate`.

Imports stay light at module level: ``actr-trio --help`` builds every subcommand's parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Generate Python code from .proto files: the protobuf classes and, for each
service, a handler base class (one abstract async method per rpc, routed by its
key package.Service.Method) and a client stub. The actr method options in
actr/options.proto pick each route's lane and priority.

Problems are printed as file:line:column: message, with exit status 1.

example:
  actr-trio codegen protos/echo.proto -o echo_gen"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``PROTO... [-I DIR]... -o OUT [--package PYPKG]``, and the maintainers'
    ``--builtin`` (hidden from the help: ``nox -s codegen`` runs it)."""
    parser.add_argument("protos", nargs="*", type=Path, metavar="PROTO", help=".proto files")
    parser.add_argument(
        "-I",
        "--proto-path",
        dest="include_dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="import root, repeatable (default: the folders of PROTO); "
        "actr/options.proto and google/protobuf/* are always importable",
    )
    parser.add_argument(
        "-o", "--out", type=Path, metavar="OUT", help="output folder, made a Python package"
    )
    parser.add_argument(
        "--package",
        metavar="PYPKG",
        help="the Python package OUT is importable as (default: relative imports inside OUT)",
    )
    parser.add_argument(
        "--builtin",
        action="store_true",
        # Regenerates actr_trio/_proto from protos/actr/*.proto (no PROTO, no -o): maintainers
        # only, through `nox -s codegen`.
        help=argparse.SUPPRESS,
    )


def run(args: argparse.Namespace) -> int:
    """Generate; print problems as ``file:line:column: message`` on stderr, return 1 then."""
    from ..errors import CodegenError
    from ._generator import generate, generate_builtin

    try:
        if args.builtin:
            if args.protos or args.out or args.include_dirs or args.package:
                raise CodegenError("--builtin takes no PROTO, -I, -o or --package")
            generate_builtin()
            return 0
        if not args.protos or args.out is None:
            raise CodegenError("give PROTO... and -o OUT")
        result = generate(
            args.protos, out_dir=args.out, include_dirs=args.include_dirs, package=args.package
        )
    except CodegenError as exc:
        sys.stderr.write(f"actr-trio codegen: error:\n{exc}\n")
        return 1
    if result.warnings:
        sys.stderr.write(f"{result.warnings}\n")
    return 0
