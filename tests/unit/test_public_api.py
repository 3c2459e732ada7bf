"""The public surface: exports, finality, layering, and a light import."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import actr_trio
import actr_trio.errors
import actr_trio.testing

PACKAGE = Path(actr_trio.__file__).parent

# A snapshot: any change to the public names is a visible diff in review.
PUBLIC = {
    "Acl", "AclRule",
    "ActrId", "ActrNode", "ActrRef", "ActrSystem", "ActrType", "Config", "Context", "Lane",
    "MediaFrame", "NodeStatistics", "Priority", "Strategy", "StreamChunk", "StreamRegistry",
    "StreamSender", "Supervisor", "SupervisorGaveUp", "SupervisorStatistics", "TrackRegistry",
    "Workload", "errors", "route",
}  # fmt: skip
ERRORS = {
    "ActrError", "AuthError", "CallError", "CodegenError", "ConfigError", "DataDirInUse",
    "DeadlineExceeded", "EnvelopeTooLarge", "MalformedEnvelope", "Overloaded", "PeerUnavailable",
    "MetricsUnavailable",
    "RemoteError",
    "PeerNotAuthenticated", "LinkRefused", "MediaUnsupported",
    "CredentialError", "IdentityTaken", "IssuerKeyMismatch",
    "PermissionDenied",
    "ServerCertificateError",
    "SignalingOverloaded", "RelayTooLarge",
    "RemoteShuttingDown", "Retryable", "RouteNotFound", "SessionTakenOver", "ShuttingDown",
    "SignalingError", "StreamIncomplete", "TransportError", "WrongTarget",
}  # fmt: skip


def test_all_matches_the_snapshot_and_resolves() -> None:
    assert set(actr_trio.__all__) == PUBLIC
    assert set(actr_trio.errors.__all__) == ERRORS
    for module in (actr_trio, actr_trio.errors, actr_trio.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_errors_have_one_root_and_public_module() -> None:
    for name in ERRORS:
        cls = getattr(actr_trio.errors, name)
        assert issubclass(cls, actr_trio.errors.ActrError)
        assert cls.__module__ == "actr_trio.errors"


def test_concrete_public_classes_are_final() -> None:
    # Workload is the base users subclass; errors and enums follow their own rules.
    open_for_subclassing = {"Workload"}
    for name in actr_trio.__all__:
        obj = getattr(actr_trio, name)
        if not inspect.isclass(obj) or name in open_for_subclassing or issubclass(obj, Exception):
            continue
        assert getattr(obj, "__final__", False), f"{name} should be @final"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
            found.update(
                f"{base}.{alias.name}" if node.module else base + alias.name for alias in node.names
            )
    return found


def _sources() -> dict[str, set[str]]:
    return {
        str(path.relative_to(PACKAGE)): _imports(path)
        for path in PACKAGE.rglob("*.py")
        if "_proto" not in path.parts
    }


def test_only_the_webrtc_transports_asyncio_side_touches_asyncio() -> None:
    # aiortc runs on its own asyncio loop thread; one module drives it, the rest is plain Trio.
    # _ice.py bends aioice's address gathering (no asyncio code of its own).
    allowed = {"transport/_webrtc_aio.py": {"asyncio", "aiortc"}, "transport/_ice.py": {"aioice"}}
    for name, imports in _sources().items():
        bad = {
            i
            for i in imports
            if i.split(".")[0] in {"asyncio", "aiortc", "trio_asyncio", "aioice"}
            and i.split(".")[0] not in allowed.get(name, set())
        }
        assert not bad, f"{name} imports {bad}"


def test_inner_ring_does_not_import_transports_or_signaling() -> None:
    inner = {
        "_scheduler.py", "_mailbox.py", "_mailbox_sqlite.py", "_router.py", "_streams.py",
        "_tracks.py", "_fastlane.py", "_link.py", "_envelope.py", "_ingate.py", "_outgate.py",
        "_wire.py", "_local.py", "_peerlane.py", "_dispatcher.py", "_deadlines.py",
        "_mailbox_memory.py", "_mailbox_sqlcore.py", "_mailbox_schema.py", "_idle.py",
    }  # fmt: skip
    for name, imports in _sources().items():
        if name not in inner:
            continue
        for imported in imports:
            # The contract (transport/_abc.py) is shared; implementations are not.
            if "transport" in imported and "_abc" not in imported and imported != ".transport":
                raise AssertionError(f"{name} imports {imported}")
            assert "signaling" not in imported, f"{name} imports {imported}"


# The inner ring of the runtime: these import each other only downwards (also under
# TYPE_CHECKING: a cycle there is a cycle of the design, whatever Python tolerates).
INNER_RING = (
    "_node", "_context", "_router", "_streams", "_tracks", "_ingate", "_dispatcher",
)  # fmt: skip


def _module_graph() -> dict[str, set[str]]:
    """``actr_trio`` module -> the ``actr_trio`` modules it imports (any import statement)."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        if "_proto" in path.parts:
            continue
        parts = ("actr_trio", *path.relative_to(PACKAGE).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{up}.{base}" if base else up
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, if there is one."""
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop()
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    return None


def test_the_inner_ring_imports_in_no_circle() -> None:
    graph = _module_graph()
    assert all(f"actr_trio.{name}" in graph for name in INNER_RING)
    for name in INNER_RING:
        cycle = _cycle_through(graph, f"actr_trio.{name}")
        assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_sees_type_checking_imports() -> None:
    # _router names Context only for its annotations (under TYPE_CHECKING): still an edge.
    assert "actr_trio._context" in _module_graph()["actr_trio._router"]


def test_transport_does_not_import_the_runtime() -> None:
    runtime = ("_node", "_scheduler", "_mailbox", "_router", "_context", "_ingate", "_outgate")
    for name, imports in _sources().items():
        if not name.startswith("transport/"):
            continue
        for imported in imports:
            assert not any(part in imported for part in runtime), f"{name} imports {imported}"


def test_import_actr_trio_stays_light() -> None:
    code = "import sys, actr_trio, actr_trio.testing; print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiortc', 'trio_asyncio', 'grpc_tools', 'trio_websocket')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# A node that keeps nothing on disk, serves no metrics and has no tracer provider loads none of
# what only those need (node start is mostly imports: issue 11, W8).
NODE_START = """
import sys, trio
from actr_trio import ActrType, Context, Workload, route
from actr_trio.testing import LocalRealm

class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

async def main() -> None:
    async with LocalRealm("light") as realm, realm.start(Echo()) as a, realm.start(Echo()) as b:
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"hi") == b"hi"

trio.run(main)
optional = ("sqlite3", "opentelemetry", "tomllib", "difflib", "json", "aiortc", "aioice")
loaded = [m for m in sys.modules if m.split(".")[0] in optional]
loaded += [m for m in sys.modules if m.startswith("cryptography.hazmat.primitives.serialization")]
loaded += [m for m in ("actr_trio._metrics_http", "actr_trio._mailbox_sqlite") if m in sys.modules]
print(sorted(loaded))
"""


def test_a_plain_node_loads_no_module_only_durability_metrics_or_tracing_need() -> None:
    out = subprocess.run(
        [sys.executable, "-c", NODE_START], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
