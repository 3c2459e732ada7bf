"""From ``.proto`` services to handler base classes and typed client stubs.

The pipeline reads everything from protoc, never from the ``.proto`` text:

1. :func:`~._protoc.describe` parses the inputs and their imports into a ``FileDescriptorSet``
   (with source locations, so our errors carry ``file:line:column`` like protoc's);
2. :func:`plan` turns each service into a :class:`ServiceSpec`, reading the ``actr.lane`` and
   ``actr.priority`` method options, and rejects what cannot be generated (streaming rpcs,
   lanes a route cannot use, Python name clashes), before anything is written;
3. protoc's Python and ``.pyi`` output is rewritten to import from the output package, and
   :func:`render` emits ``<name>_actr.py`` beside ``<name>_pb2.py``.

Output is deterministic: the same inputs give the same bytes (sorted, no timestamps, no paths).
"""

from __future__ import annotations

import keyword
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, final

import attrs
from google.protobuf import descriptor_pb2

from .._lanes import Lane, Priority
from .._proto.actr import options_pb2
from ..errors import CodegenError
from ._protoc import (
    BUILTIN_PACKAGE_MAP,
    ImportMap,
    builtin_proto_root,
    compile_python,
    describe,
    module_name,
    split_module,
    well_known_proto_root,
    write_if_changed,
)

_PROTO_PACKAGE_DIR: Final = Path(__file__).resolve().parent.parent / "_proto"

#: Proto files never generated into the output folder: they are imported from elsewhere.
_EXTERNAL_PREFIXES: Final = ("google/protobuf/", *(f"{top}/" for top in BUILTIN_PACKAGE_MAP))

#: Names a generated method must not take: Workload's own attributes (overriding ``on_start``
#: with an rpc would silently replace the lifecycle hook), and the module-level names the class
#: bodies of generated code use (a method ``route`` would shadow the decorator below it).
_RESERVED: Final = frozenset({"actr_type", "on_start", "on_stop", "abc", "route", "final"})

# FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2 (source location paths).
_SERVICE_FIELD: Final = 6
_METHOD_FIELD: Final = 2

_ROUTE_LANES: Final = (Lane.SIGNAL, Lane.RELIABLE)


@final
@attrs.frozen
class Generated:
    """What :func:`generate` did.

    Attributes:
        files: every file written or already up to date, sorted.
        warnings: protoc's warnings (e.g. unused imports), one per line; may be empty.
    """

    files: tuple[Path, ...]
    warnings: str


@final
@attrs.frozen
class TypeRef:
    """A message class: the Python module defining it and its dotted name inside it."""

    module: str
    name: str


@final
@attrs.frozen
class MethodSpec:
    """One unary rpc as the generated code sees it."""

    proto_name: str
    python_name: str
    route_key: str
    request: TypeRef
    response: TypeRef
    lane: Lane
    priority: Priority
    comment: str


@final
@attrs.frozen
class ServiceSpec:
    """One service: its full name and its methods, in .proto order."""

    name: str
    full_name: str
    methods: tuple[MethodSpec, ...]
    comment: str


@final
@attrs.frozen
class FileSpec:
    """One ``.proto`` file with services, and where its ``_actr`` module goes."""

    proto_name: str
    package: str
    pb2_module: str
    services: tuple[ServiceSpec, ...]

    @property
    def actr_module(self) -> str:
        """Dotted name of the generated module, beside ``_pb2``: ``a/echo.proto`` -> ``a.echo_actr``."""
        return self.pb2_module.removesuffix("_pb2") + "_actr"


class _Locator:
    """Turns a descriptor path into ``file:line:column`` for error messages."""

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto, display: str) -> None:
        self._display = display
        self._spans = {tuple(loc.path): tuple(loc.span) for loc in proto.source_code_info.location}
        self._comments = {
            tuple(loc.path): loc.leading_comments for loc in proto.source_code_info.location
        }

    def at(self, path: tuple[int, ...]) -> str:
        span = self._spans.get(path)
        if not span:
            return self._display
        return f"{self._display}:{span[0] + 1}:{span[1] + 1}"

    def comment(self, path: tuple[int, ...]) -> str:
        return self._comments.get(path, "")


def snake_case(name: str) -> str:
    """``GetHTTPResponse`` -> ``get_http_response``; a Python keyword gets a trailing ``_``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    result = words.lower()
    return result + "_" if keyword.iskeyword(result) else result


def plan(
    fds: descriptor_pb2.FileDescriptorSet,
    names: Iterable[str],
    *,
    display: Mapping[str, str],
) -> list[FileSpec]:
    """Read the services of the files ``names`` from ``fds``.

    Args:
        fds: protoc's descriptor set, imports included.
        names: the proto files to plan, as protoc names them.
        display: proto name -> path to show in error messages.

    Returns:
        One :class:`FileSpec` per file that has services, sorted by proto name.

    Raises:
        CodegenError: every problem found, one ``file:line:column: message`` per line.
    """
    by_name = {f.name: f for f in fds.file}
    messages: dict[str, TypeRef] = {}
    for f in fds.file:
        _collect_messages(f, module_name(f.name), messages)
    errors: list[str] = []
    specs = []
    for name in sorted(names):
        proto = by_name[name]
        if not proto.service:
            continue
        where = _Locator(proto, display.get(name, name))
        services = tuple(
            _plan_service(proto, index, messages, where, errors)
            for index in range(len(proto.service))
        )
        specs.append(FileSpec(name, proto.package, module_name(name), services))
    if errors:
        raise CodegenError("\n".join(errors))
    return specs


def _collect_messages(
    proto: descriptor_pb2.FileDescriptorProto, module: str, out: dict[str, TypeRef]
) -> None:
    prefix = f".{proto.package}." if proto.package else "."

    def walk(message: descriptor_pb2.DescriptorProto, outer: str) -> None:
        name = f"{outer}.{message.name}" if outer else message.name
        out[prefix + name] = TypeRef(module, name)
        for nested in message.nested_type:
            walk(nested, name)

    for message in proto.message_type:
        walk(message, "")


def _plan_service(
    proto: descriptor_pb2.FileDescriptorProto,
    index: int,
    messages: Mapping[str, TypeRef],
    where: _Locator,
    errors: list[str],
) -> ServiceSpec:
    service = proto.service[index]
    full_name = f"{proto.package}.{service.name}" if proto.package else service.name
    methods: list[MethodSpec] = []
    seen: dict[str, str] = {}
    for m_index, method in enumerate(service.method):
        path = (_SERVICE_FIELD, index, _METHOD_FIELD, m_index)
        at = where.at(path)
        key = f"{full_name}.{method.name}"
        if method.client_streaming or method.server_streaming:
            errors.append(
                f"{at}: rpc {key} streams; actr-trio codegen generates unary rpcs only "
                "(send streams with ctx.open_stream on the fast path)"
            )
            continue
        python_name = snake_case(method.name)
        if python_name.startswith("_") or python_name.endswith("_pb2") or python_name in _RESERVED:
            errors.append(
                f"{at}: rpc {key} would become Python method {python_name!r}, which is "
                "reserved (a Workload attribute or a name generated code uses); rename the rpc"
            )
            continue
        if python_name in seen:
            errors.append(
                f"{at}: rpc {key} and rpc {full_name}.{seen[python_name]} both become "
                f"Python method {python_name!r}; rename one"
            )
            continue
        seen[python_name] = method.name
        options = _actr_options(method.options)
        lane = Lane(options.get(options_pb2.lane.full_name) or Lane.RELIABLE)
        if lane not in _ROUTE_LANES:
            errors.append(
                f"{at}: rpc {key}: (actr.lane) = {lane.name} is not allowed; "
                "rpcs use SIGNAL or RELIABLE"
            )
            continue
        priority = Priority(options.get(options_pb2.priority.full_name) or Priority.NORMAL)
        methods.append(
            MethodSpec(
                proto_name=method.name,
                python_name=python_name,
                route_key=key,
                request=messages[method.input_type],
                response=messages[method.output_type],
                lane=lane,
                priority=priority,
                comment=where.comment(path),
            )
        )
    return ServiceSpec(
        service.name, full_name, tuple(methods), where.comment((_SERVICE_FIELD, index))
    )


def _actr_options(options: descriptor_pb2.MethodOptions) -> dict[str, int]:
    """The method's extension options by full name (``actr.lane``...), as enum numbers.

    ``options_pb2`` is imported at the top of this module, so its extensions are registered and
    protobuf parses them into fields rather than unknown bytes.
    """
    return {
        field.full_name: int(value) for field, value in options.ListFields() if field.is_extension
    }


def render(spec: FileSpec, imports: ImportMap) -> str:
    """The text of ``<name>_actr.py`` for one file's services."""
    modules = sorted(
        {ref.module for s in spec.services for m in s.methods for ref in (m.request, m.response)}
    )
    aliases = _aliases(modules)
    absolute = [
        "from actr_trio import ActrId, Context, Lane, Priority, Workload, route",
        "from actr_trio.codegen import Caller",
    ]
    relative: list[str] = []
    for module in modules:
        target = imports.resolve(module, importer=spec.actr_module) or module
        head, name = split_module(target)
        alias = aliases[module]
        line = f"from {head} import {name}" + (f" as {alias}" if alias != name else "")
        (relative if head.startswith(".") else absolute).append(line)
    lines = [
        f"# Generated by actr-trio codegen from {spec.proto_name}. Do not edit.",
        f'"""actr handler bases and clients for the services of ``{spec.proto_name}``."""',
        "",
        "from __future__ import annotations",
        "",
        "import abc",
        "from typing import final",
        "",
        *sorted(absolute),
    ]
    if relative:
        lines += ["", *sorted(relative)]
    exported = sorted(
        name for s in spec.services for name in (f"{s.name}Client", f"{s.name}Handler")
    )
    lines += ["", "__all__ = [", *(f'    "{name}",' for name in exported), "]"]
    for service in spec.services:
        lines += _render_handler(service, aliases)
        lines += _render_client(service, aliases)
    return "\n".join(lines).rstrip("\n") + "\n"


def _aliases(modules: Sequence[str]) -> dict[str, str]:
    """Import each module by its last component, unless two modules share it."""
    last = [m.rpartition(".")[2] for m in modules]
    return {
        m: short if last.count(short) == 1 else m.replace(".", "_dot_")
        for m, short in zip(modules, last, strict=True)
    }


def _type(ref: TypeRef, aliases: Mapping[str, str]) -> str:
    return f"{aliases[ref.module]}.{ref.name}"


def _docstring(summary: str, comment: str, indent: str) -> list[str]:
    body = [line.rstrip() for line in comment.strip("\n").splitlines()]
    body = [line[1:] if line.startswith(" ") else line for line in body]
    text = [summary, "", *body] if any(body) else [summary]
    escaped = [line.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') for line in text]
    if len(escaped) == 1:
        return [f'{indent}"""{escaped[0]}"""']
    return (
        [f'{indent}"""{escaped[0]}']
        + [f"{indent}{line}" if line else "" for line in escaped[1:]]
        + [f'{indent}"""']
    )


def _join(comment: str, text: str) -> str:
    return f"{comment.rstrip()}\n\n{text}" if comment.strip() else text


def _render_handler(service: ServiceSpec, aliases: Mapping[str, str]) -> list[str]:
    lines = ["", "", f"class {service.name}Handler(Workload, abc.ABC):"]
    lines += _docstring(
        f"Handler base of ``{service.full_name}``: subclass it, set ``actr_type``, implement every method.",
        service.comment,
        "    ",
    )
    for m in service.methods:
        request, response = _type(m.request, aliases), _type(m.response, aliases)
        lines += [
            "",
            "    @route(",
            f'        "{m.route_key}",',
            f"        request={request},",
            f"        response={response},",
            f"        lane=Lane.{m.lane.name},",
            f"        priority=Priority.{m.priority.name},",
            "    )",
            "    @abc.abstractmethod",
            f"    async def {m.python_name}(",
            "        self,",
            f"        request: {request},",
            "        ctx: Context,",
            f"    ) -> {response}:",
        ]
        lines += _docstring(f"Handle ``{m.route_key}``.", m.comment, "        ")
    return lines


def _render_client(service: ServiceSpec, aliases: Mapping[str, str]) -> list[str]:
    lines = ["", "", "@final", f"class {service.name}Client:"]
    lines += _docstring(
        f"Client of ``{service.full_name}``: ``await {service.name}Client(ctx, target).method(request)``.",
        _join(
            service.comment,
            "``ctx`` is a handler's ``Context`` or an ``ActrRef``. ``timeout=None`` means the\n"
            "node's default timeout; ``priority`` defaults to the rpc's ``(actr.priority)``.",
        ),
        "    ",
    )
    lines += [
        "",
        '    __slots__ = ("_caller", "_target")',
        "",
        "    def __init__(self, caller: Caller, target: ActrId) -> None:",
        "        self._caller = caller",
        "        self._target = target",
        "",
        "    @property",
        "    def target(self) -> ActrId:",
        '        """The node this client calls."""',
        "        return self._target",
    ]
    for m in service.methods:
        request, response = _type(m.request, aliases), _type(m.response, aliases)
        lines += [
            "",
            f"    async def {m.python_name}(",
            "        self,",
            f"        request: {request},",
            "        *,",
            "        timeout: float | None = None,",
            f"        priority: Priority = Priority.{m.priority.name},",
            f"    ) -> {response}:",
        ]
        lines += _docstring(
            f"Call ``{m.route_key}`` on the target (lane {m.lane.name}) and return its response.",
            m.comment,
            "        ",
        )
        lines += [
            "        return await self._caller.call(",
            "            self._target,",
            f'            "{m.route_key}",',
            "            request,",
            f"            response={response},",
            "            timeout=timeout,",
            "            priority=priority,",
            f"            lane=Lane.{m.lane.name},",
            "        )",
        ]
    return lines


def generate(
    protos: Sequence[Path],
    *,
    out_dir: Path,
    include_dirs: Sequence[Path] = (),
    package: str | None = None,
) -> Generated:
    """Generate protobuf classes, ``.pyi`` stubs and ``<name>_actr.py`` modules into ``out_dir``.

    The ``.proto`` files imported by ``protos`` are generated too (except ``google/protobuf/*``
    and the library's own ``actr/*``, which are imported from protobuf and actr_trio), so
    ``out_dir`` is a self-contained package. Nothing is written unless everything is valid;
    files whose content is unchanged are left untouched.

    Args:
        protos: the ``.proto`` files to generate.
        out_dir: the output folder; it and its subfolders get an empty ``__init__.py`` if missing.
        include_dirs: protoc ``-I`` roots; default: the folders of ``protos``. The folder holding
            ``actr/options.proto`` and the well-known types are always added.
        package: the Python package ``out_dir`` is importable as; default ``None`` makes the
            imports between generated modules relative.

    Returns:
        The files written and protoc's warnings.

    Raises:
        CodegenError: protoc's errors, or ours (streaming rpc, bad lane, name clash), each as
            ``file:line:column: message``.
    """
    if not protos:
        raise CodegenError("no .proto files given")
    for proto in protos:
        if not proto.is_file():
            raise CodegenError(f"{proto}: no such file")
    if package is not None and not all(p.isidentifier() for p in package.split(".")):
        raise CodegenError(f"package={package!r} is not a dotted Python module name")
    user_dirs = list(include_dirs) or [p.parent for p in protos]
    includes = _dedupe([*user_dirs, builtin_proto_root(), well_known_proto_root()])
    fds, warnings = describe(protos, include_dirs=includes)
    names = [f.name for f in fds.file if not f.name.startswith(_EXTERNAL_PREFIXES)]
    display = _display_paths(names, protos, includes)
    _check_module_clashes(names, display)
    specs = plan(fds, names, display=display)
    outputs = compile_python(names, include_dirs=includes)
    imports = ImportMap(
        [module_name(n) for n in names], package=package, package_map=BUILTIN_PACKAGE_MAP
    )
    texts = {rel: imports.rewrite(text, importer=_module_of(rel)) for rel, text in outputs.items()}
    for spec in specs:
        texts[spec.actr_module.replace(".", "/") + ".py"] = render(spec, imports)
    files = [write_if_changed(out_dir / rel, text) for rel, text in sorted(texts.items())]
    files += _ensure_init_files(out_dir, texts)
    return Generated(tuple(sorted(set(files))), warnings)


def generate_builtin(out_dir: Path | None = None) -> list[Path]:
    """Regenerate ``actr_trio/_proto/actr/*_pb2.py[i]`` from every ``protos/actr/*.proto``.

    Deterministic: run on an unchanged tree it rewrites nothing. ``_pb2`` files in
    ``out_dir/actr`` whose ``.proto`` no longer exists are removed. Services in these protos get
    no ``_actr`` module (the runtime cannot import the runtime).

    Args:
        out_dir: the folder holding ``actr/``; default: the installed ``actr_trio/_proto``.

    Returns:
        The generated files, sorted.

    Raises:
        CodegenError: protoc failed.
    """
    target = _PROTO_PACKAGE_DIR if out_dir is None else out_dir
    root = builtin_proto_root()
    protos = sorted((root / "actr").glob("*.proto"))
    includes = [root, well_known_proto_root()]
    fds, _ = describe(protos, include_dirs=includes)
    names = [f.name for f in fds.file if f.name.startswith("actr/")]
    outputs = compile_python(names, include_dirs=includes)
    imports = ImportMap(
        [module_name(n) for n in names], package=None, package_map=BUILTIN_PACKAGE_MAP
    )
    files = [
        write_if_changed(target / rel, imports.rewrite(text, importer=_module_of(rel)))
        for rel, text in sorted(outputs.items())
    ]
    for stale in sorted((target / "actr").glob("*_pb2.py*")):
        if stale not in files and stale.suffix in (".py", ".pyi"):
            stale.unlink()
    init = target / "actr" / "__init__.py"
    if not init.exists():
        files.append(write_if_changed(init, ""))
    return sorted(files)


def _module_of(rel: str) -> str:
    return rel.removesuffix(".pyi").removesuffix(".py").replace("/", ".")


def _dedupe(paths: Iterable[Path]) -> list[Path]:
    seen: set[Path] = set()
    result = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.append(path)
    return result


def _display_paths(
    names: Sequence[str], protos: Sequence[Path], includes: Sequence[Path]
) -> dict[str, str]:
    """Proto name -> the path to print: as given on the command line, else found under -I."""
    given = {p.resolve(): str(p) for p in protos}
    result = {}
    for name in names:
        for root in includes:
            candidate = root / name
            if candidate.is_file():
                result[name] = given.get(candidate.resolve(), _relative(candidate))
                break
    return result


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)


def _check_module_clashes(names: Sequence[str], display: Mapping[str, str]) -> None:
    owners: dict[str, str] = {}
    errors = []
    for name in sorted(names):
        module = module_name(name)
        if module in owners:
            errors.append(
                f"{display.get(name, name)}: generates Python module {module} like "
                f"{display.get(owners[module], owners[module])}; rename one file"
            )
        owners.setdefault(module, name)
    if errors:
        raise CodegenError("\n".join(errors))


def _ensure_init_files(out_dir: Path, texts: Mapping[str, str]) -> list[Path]:
    """An empty ``__init__.py`` in ``out_dir`` and each subfolder with generated modules."""
    folders = {out_dir}
    for rel in texts:
        parent = (out_dir / rel).parent
        while parent != out_dir:
            folders.add(parent)
            parent = parent.parent
    result = []
    for folder in sorted(folders):
        init = folder / "__init__.py"
        if not init.exists():
            write_if_changed(init, "")
        result.append(init)
    return result
