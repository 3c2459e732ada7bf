"""Run protoc (from grpcio-tools) and make its Python output importable from a package.

protoc writes ``from actr import types_pb2``: an absolute import of the proto folder path, which
only works when the output folder itself is on ``sys.path``. :class:`ImportMap` rewrites those
imports so generated code lives inside a real package: to a fixed package for the built-in
``actr/*`` protos, and to the output package (absolute, or relative when no package name is given)
for everything generated in the same run. ``google.protobuf`` imports are left alone.

Every protoc run goes through :func:`_invoke`, which turns a failure into :class:`CodegenError`
carrying protoc's own ``file:line:column: message`` lines.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Final

from google.protobuf import descriptor_pb2

from ..errors import CodegenError

_PACKAGE_DIR: Final = Path(__file__).resolve().parent.parent

#: proto top-level folder -> Python package its modules are imported from, wherever code is
#: generated: user protos that ``import "actr/options.proto"`` use the library's own modules.
BUILTIN_PACKAGE_MAP: Mapping[str, str] = {"actr": "actr_trio._proto.actr"}


# actr_trio is installed from a clone (it is not on a package index), so name both ways.
_NEEDS_GRPC_TOOLS: Final = (
    "codegen needs grpcio-tools: pip install grpcio-tools "
    "(or, in a clone of actr_trio: pip install -e '.[codegen]')"
)


def builtin_proto_root() -> Path:
    """Where ``actr/*.proto`` lives: inside the wheel, or ``protos/`` in a source checkout.

    User protos may ``import "actr/options.proto"``; codegen adds this root to ``-I``.

    Raises:
        CodegenError: neither location has ``actr/wire.proto``.
    """
    for candidate in (_PACKAGE_DIR / "_proto_src", _PACKAGE_DIR.parent / "protos"):
        if (candidate / "actr" / "wire.proto").is_file():
            return candidate
    raise CodegenError("cannot find actr/wire.proto (broken install?)")


def well_known_proto_root() -> Path:
    """The ``google/protobuf/*.proto`` shipped with grpcio-tools.

    Raises:
        CodegenError: grpcio-tools is not installed.
    """
    try:
        import grpc_tools
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CodegenError(_NEEDS_GRPC_TOOLS) from exc
    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def module_name(proto_name: str) -> str:
    """The dotted Python module protoc generates for a proto file name (``a/b-c.proto`` -> ``a.b_c_pb2``)."""
    stem = proto_name.removesuffix(".proto").replace("-", "_")
    return stem.replace("/", ".") + "_pb2"


def _invoke(args: Sequence[str]) -> str:
    """Run protoc in-process; return its warnings, raise CodegenError with its errors."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CodegenError(_NEEDS_GRPC_TOOLS) from exc
    # protoc prints from C++ on fd 2: capture the file descriptor, not sys.stderr.
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(err.fileno(), 2)
            code = protoc.main(["protoc", *args])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if code != 0:
        raise CodegenError(message or f"protoc exited with status {code}")
    return message


def _include_args(include_dirs: Sequence[Path]) -> list[str]:
    return [f"-I{d}" for d in include_dirs]


def describe(
    protos: Sequence[Path], *, include_dirs: Sequence[Path]
) -> tuple[descriptor_pb2.FileDescriptorSet, str]:
    """Parse ``protos`` and their imports into a ``FileDescriptorSet`` with source locations.

    Returns:
        The descriptor set (imports first, as protoc orders it) and protoc's warnings.

    Raises:
        CodegenError: a syntax error, a missing import, an undefined type...: protoc's message.
    """
    with tempfile.TemporaryDirectory(prefix="actr-codegen-") as tmp:
        out = Path(tmp) / "set.binpb"
        warnings = _invoke(
            [
                *_include_args(include_dirs),
                f"--descriptor_set_out={out}",
                "--include_imports",
                "--include_source_info",
                *(str(p) for p in protos),
            ]
        )
        data = out.read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data), warnings


def compile_python(names: Collection[str], *, include_dirs: Sequence[Path]) -> dict[str, str]:
    """Run protoc's Python and ``.pyi`` generators for the proto files ``names``.

    Args:
        names: proto file names as protoc knows them (relative to an include dir).
        include_dirs: protoc ``-I`` roots.

    Returns:
        Generated file path (relative, POSIX) -> text, imports not yet rewritten.
    """
    with tempfile.TemporaryDirectory(prefix="actr-codegen-") as tmp:
        out = Path(tmp)
        _invoke(
            [
                *_include_args(include_dirs),
                f"--python_out={out}",
                f"--pyi_out={out}",
                *sorted(names),
            ]
        )
        return {
            path.relative_to(out).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(out.rglob("*"))
            if path.is_file()
        }


_IMPORT_AS: Final = re.compile(r"^import (?P<module>[\w.]+_pb2) as (?P<alias>\w+)$")
_FROM_PACKAGE: Final = re.compile(
    r"^from (?P<package>[\w.]+) import (?P<name>\w+_pb2)(?P<rest> as \w+)?$"
)
_FROM_MODULE: Final = re.compile(r"^from (?P<module>[\w.]+_pb2) import (?P<rest>.+)$")


class ImportMap:
    """Where the modules protoc imports are found once generated code lives in a package.

    Args:
        generated: dotted modules (``a.b_pb2``) written into the output folder in this run.
        package: the Python package the output folder is importable as; ``None`` makes imports
            between generated modules relative, so the folder works under any package name.
        package_map: proto top-level folder -> Python package, taking precedence over
            ``generated`` (e.g. :data:`BUILTIN_PACKAGE_MAP`).
    """

    def __init__(
        self,
        generated: Collection[str],
        *,
        package: str | None,
        package_map: Mapping[str, str],
    ) -> None:
        self._generated = frozenset(generated)
        self._package = package
        self._package_map = dict(package_map)

    def resolve(self, module: str, *, importer: str) -> str | None:
        """The module path to import ``module`` by from the generated module ``importer``.

        Returns:
            An absolute dotted path, a relative one (``..sub.c_pb2``), or ``None`` when
            ``module`` is not ours to rewrite (``google.protobuf``...).
        """
        top, _, rest = module.partition(".")
        if top in self._package_map and rest:
            return f"{self._package_map[top]}.{rest}"
        if module not in self._generated:
            return None
        if self._package is not None:
            return f"{self._package}.{module}"
        # Shortest relative path: up to the common package, then down to the module.
        here = importer.split(".")[:-1]
        there = module.split(".")
        common = 0
        while common < min(len(here), len(there) - 1) and here[common] == there[common]:
            common += 1
        return "." * (len(here) - common + 1) + ".".join(there[common:])

    def rewrite(self, text: str, *, importer: str) -> str:
        """Rewrite the import lines of one generated ``_pb2.py``/``.pyi`` module."""
        return "".join(
            self._rewrite_line(line, importer) for line in text.splitlines(keepends=True)
        )

    def _rewrite_line(self, line: str, importer: str) -> str:
        body = line.rstrip("\r\n")
        end = line[len(body) :]
        if m := _IMPORT_AS.match(body):
            new = self.resolve(m["module"], importer=importer)
            if new is not None:
                head, name = split_module(new)
                return f"from {head} import {name} as {m['alias']}{end}"
        elif m := _FROM_PACKAGE.match(body):
            new = self.resolve(f"{m['package']}.{m['name']}", importer=importer)
            if new is not None:
                head, name = split_module(new)
                return f"from {head} import {name}{m['rest'] or ''}{end}"
        elif m := _FROM_MODULE.match(body):
            new = self.resolve(m["module"], importer=importer)
            if new is not None:
                return f"from {new} import {m['rest']}{end}"
        return line


def split_module(module: str) -> tuple[str, str]:
    """``a.b.c`` -> (``a.b``, ``c``); ``..c`` -> (``..``, ``c``); ``.c`` -> (``.``, ``c``)."""
    head, _, name = module.rpartition(".")
    if not head.strip("."):
        head += "."
    return head, name


def write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (creating folders) unless it already holds exactly that."""
    data = text.encode("utf-8")
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path
