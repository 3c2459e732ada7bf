"""Run protoc (from grpcio-tools) and make its Python output importable from a package.

protoc writes ``from actr import types_pb2``: an absolute import of the proto package path,
which only works when the output folder is on ``sys.path``. We rewrite those imports to the
Python package the files are generated into, so generated code lives inside a real package.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import CodegenError

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def builtin_proto_root() -> Path:
    """Where ``actr/*.proto`` lives: inside the wheel, or ``protos/`` in a source checkout.

    User protos may ``import "actr/options.proto"``; codegen adds this root to ``-I``.
    """
    for candidate in (_PACKAGE_DIR / "_proto_src", _PACKAGE_DIR.parent / "protos"):
        if (candidate / "actr" / "wire.proto").is_file():
            return candidate
    raise CodegenError("cannot find actr/wire.proto (broken install?)")


BUILTIN_PACKAGE_MAP: Mapping[str, str] = {"actr": "actr_trio._proto.actr"}

_IMPORT_RE = re.compile(
    r"^from ((?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*) import (\w+_pb2)", re.M
)


def run_protoc(
    protos: Sequence[Path],
    *,
    include_dirs: Sequence[Path],
    out_dir: Path,
    package_map: Mapping[str, str],
) -> list[Path]:
    """Generate ``*_pb2.py`` and ``*_pb2.pyi`` for ``protos`` into ``out_dir``.

    Args:
        protos: ``.proto`` files, each under one of ``include_dirs``.
        include_dirs: protoc ``-I`` roots (the grpcio-tools well-known types are added).
        out_dir: where the proto package folders are written.
        package_map: proto top-level folder -> Python package it is importable as,
            e.g. ``{"actr": "actr_trio._proto.actr"}``; imports are rewritten accordingly.

    Returns:
        The generated files, sorted.

    Raises:
        CodegenError: protoc failed; the message carries protoc's own file:line errors.
    """
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CodegenError("codegen needs grpcio-tools: pip install 'actr-trio[codegen]'") from exc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*_pb2.py*")}
    args = ["protoc", f"-I{well_known}"]
    args += [f"-I{d}" for d in include_dirs]
    args += [f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
    args += [str(p) for p in protos]
    # protoc prints its errors on fd 2 from C++: capture the fd, not sys.stderr.
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(err.fileno(), 2)
            code = protoc.main(args)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if code != 0:
        raise CodegenError(message or f"protoc exited with {code}")
    generated = sorted(
        p for p in out_dir.rglob("*_pb2.py*") if before.get(p) != p.stat().st_mtime_ns
    )
    for path in generated:
        _rewrite_imports(path, package_map)
    return generated


def _rewrite_imports(path: Path, package_map: Mapping[str, str]) -> None:
    def replace(match: re.Match[str]) -> str:
        module, name = match.group(1), match.group(2)
        top, _, rest = module.partition(".")
        if top not in package_map:
            return match.group(0)
        target = package_map[top] + (f".{rest}" if rest else "")
        return f"from {target} import {name}"

    text = path.read_text()
    path.write_text(_IMPORT_RE.sub(replace, text))
