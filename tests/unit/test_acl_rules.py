"""ACLs: rules, their configuration (code and Actr.toml), and enforcement at the receiving node
before the mailbox accepts: the caller gets PermissionDenied, the receiver logs a WARNING and
keeps serving, allowed callers are unaffected. Local calls follow the same rules."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio
import trio.testing

from actr_trio import (
    Acl,
    AclRule,
    ActrId,
    ActrType,
    Config,
    Context,
    Lane,
    Priority,
    StreamChunk,
    Workload,
    route,
)
from actr_trio._acl import AclGuard, guard, type_pattern_matches
from actr_trio.errors import ConfigError, PermissionDenied, StreamIncomplete
from actr_trio.testing import LocalRealm

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")

BOUND = 20

ACME_ECHO = ActrId("local", 1, ActrType("acme", "echo"))
ACME_EVIL = ActrId("local", 2, ActrType("acme", "evil"))
OPS_ADMIN = ActrId("ops", 3, ActrType("ops", "admin"))


# -- rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "actr_type", "expected"),
    [
        ("*", ActrType("any", "thing"), True),
        ("acme:*", ActrType("acme", "echo"), True),
        ("acme:*", ActrType("acmex", "echo"), False),
        ("*:echo", ActrType("other", "echo"), True),
        ("acme:ec*", ActrType("acme", "echo"), True),
        ("acme:echo", ActrType("acme", "echo2"), False),
        ("a.b:c", ActrType("aXb", "c"), False),  # "." is literal, not "any character"
    ],
)
def test_caller_patterns(pattern: str, actr_type: ActrType, expected: bool) -> None:
    assert type_pattern_matches(pattern, actr_type) is expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"caller": "acme"}, "caller='acme' must be 'manufacturer:name'"),
        ({"caller": "a:b:c"}, "must be 'manufacturer:name'"),
        ({"caller": "acme:e?ho"}, "caller name='e?ho' must be"),
        ({"caller": "*", "realm": "a b"}, "realm='a b' must be"),
        ({"caller": "*", "routes": ["demo Echo"]}, "routes has 'demo Echo'"),
        ({"caller": "*", "max_priority": "urgent"}, "max_priority='urgent' must be a Priority"),
    ],
)
def test_malformed_rules_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        AclRule(**kwargs)  # type: ignore[arg-type]


def test_a_deny_rule_cannot_cap_the_priority() -> None:
    with pytest.raises(ConfigError, match="only allow rules cap the priority"):
        Acl(deny=[AclRule("acme:*", max_priority=Priority.LOW)])


def test_decisions() -> None:
    acl = Acl(
        allow=[
            AclRule("acme:*", max_priority="normal"),
            AclRule("ops:*", realm="ops", routes=["demo.Admin.*", "demo.Echo.Echo"]),
        ],
        deny=[AclRule("acme:evil")],
    )
    assert acl.permits(ACME_ECHO, "demo.Echo.Echo", Priority.NORMAL)
    assert not acl.permits(ACME_ECHO, "demo.Echo.Echo", Priority.HIGH)  # above its cap
    assert not acl.permits(ACME_EVIL, "demo.Echo.Echo", Priority.LOW)  # deny wins
    assert acl.permits(OPS_ADMIN, "demo.Admin.Restart", Priority.HIGH)
    assert not acl.permits(OPS_ADMIN, "demo.Other.X")  # no allow rule for that route
    assert not acl.permits(OPS_ADMIN)  # streams: only rules without routes speak for them
    assert acl.permits(ACME_ECHO)
    other_realm = ActrId("local", 4, ActrType("ops", "admin"))
    assert not acl.permits(other_realm, "demo.Admin.Restart")
    assert not Acl().permits(ACME_ECHO, "demo.Echo.Echo")  # an ACL with no allow: deny all
    assert acl.refusal(ACME_EVIL, "x.y", None) == "denied by the deny rule for 'acme:evil'"
    assert acl.refusal(OPS_ADMIN, "x.y", None) == "no allow rule matches"


def test_a_guard_needs_every_acl_and_caches_within_bounds() -> None:
    assert guard(None, None, owner="W") is None
    both = guard(Acl(allow=[AclRule("acme:*")]), Acl(allow=[AclRule("*:echo")]), owner="W")
    assert isinstance(both, AclGuard)
    assert both.refusal(ACME_ECHO, "a.b", Priority.NORMAL) is None
    assert both.refusal(ACME_EVIL, "a.b", Priority.NORMAL) == "no allow rule matches"
    for serial in range(5000):  # far more distinct callers than the cache holds
        both.refusal(ActrId("local", serial, ActrType("acme", "echo")), "a.b", None)
    assert len(both._cache) <= 4096
    with pytest.raises(ConfigError, match=r"W\.acl='open' must be an Acl or None"):
        guard("open", owner="W")  # type: ignore[arg-type]


def test_visibility_for_discovery() -> None:
    acl = Acl(
        allow=[AclRule("acme:*"), AclRule("ops:admin", realm="other")],
        deny=[AclRule("acme:evil"), AclRule("acme:client", routes=["demo.Admin.*"])],
    )
    visibility = acl.visibility("local")
    assert visibility.allow == ("acme:*",)  # the rule for another realm says nothing here
    assert visibility.deny == ("acme:evil",)  # a route-limited deny does not hide the node
    assert visibility.admits(ActrType("acme", "client"))
    assert not visibility.admits(ActrType("acme", "evil"))
    assert not visibility.admits(ActrType("ops", "admin"))


# -- configuration ---------------------------------------------------------------------------


def test_acl_from_actr_toml(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text(
        """
        [actr]
        realm = "prod"

        [[actr.acl.allow]]
        caller = "acme:*"
        routes = ["demo.Echo.*"]
        max_priority = "NORMAL"

        [[actr.acl.allow]]
        caller = "ops:admin"
        realm = "prod"

        [[actr.acl.deny]]
        caller = "acme:intruder"
        """
    )
    config = Config.from_file(path, environ={})
    assert config.acl == Acl(
        allow=[
            AclRule("acme:*", routes=("demo.Echo.*",), max_priority=Priority.NORMAL),
            AclRule("ops:admin", realm="prod"),
        ],
        deny=[AclRule("acme:intruder")],
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[acl.alow]]\ncaller = "*"\n', "'alow' is not 'allow' or 'deny'; did you mean 'allow'?"),
        ('[[acl.allow]]\ncaler = "*"\n', "acl.allow[0]: 'caler' is not an ACL rule key"),
        ('[[acl.allow]]\nrealm = "x"\n', "acl.allow[0] has no 'caller'"),
        ('[[acl.deny]]\ncaller = "x"\n', "acl.deny[0]: caller='x' must be"),
        ('acl = "open"\n', "acl='open' is not an Acl"),
    ],
)
def test_acl_errors_in_actr_toml_name_the_rule(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        Config.from_file(path, environ={})
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_the_acl_does_not_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text("")
    with pytest.raises(ConfigError, match="ACTR_ACL is set, but acl cannot come from the env"):
        Config.from_file(path, environ={"ACTR_ACL": "allow *"})


def test_acl_in_code() -> None:
    assert Config().acl is None
    config = Config(acl={"allow": [{"caller": "acme:*"}]})
    assert config.acl == Acl(allow=[AclRule("acme:*")])
    with pytest.raises(ConfigError, match=r"Config\.acl=3 is not an Acl"):
        Config(acl=3)  # type: ignore[arg-type]


# -- enforcement -------------------------------------------------------------------------------


class Guarded(Workload):
    actr_type = ActrType("acme", "vault")
    acl = Acl(
        allow=[
            AclRule("acme:client", max_priority=Priority.NORMAL),
            AclRule("ops:*", routes=["demo.Vault.Open"]),
        ],
        deny=[AclRule("acme:intruder")],
    )

    def __init__(self) -> None:
        self.handled: list[tuple[str, ActrId | None]] = []
        self.chunks: list[bytes] = []

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register("vault-stream", self.on_chunk)

    async def on_chunk(self, chunk: StreamChunk, ctx: Context) -> None:
        if not chunk.end:
            self.chunks.append(chunk.payload)

    @route("demo.Vault.Open")
    async def open(self, request: bytes, ctx: Context) -> bytes:
        self.handled.append(("open", ctx.caller_id))
        return b"opened"

    @route("demo.Vault.Peek")
    async def peek(self, request: bytes, ctx: Context) -> bytes:
        self.handled.append(("peek", ctx.caller_id))
        return b"peeked"


def _typed(manufacturer: str, name: str) -> type[Workload]:
    return type(f"{manufacturer}_{name}", (Workload,), {"actr_type": ActrType(manufacturer, name)})


async def test_denied_callers_get_permission_denied_and_allowed_ones_are_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault = Guarded()
    with trio.fail_after(BOUND), caplog.at_level(logging.WARNING, logger="actr_trio"):
        async with (
            LocalRealm() as realm,
            realm.start(vault) as v,
            realm.start(_typed("acme", "client")()) as client,
            realm.start(_typed("acme", "intruder")()) as intruder,
            realm.start(_typed("ops", "admin")()) as admin,
            realm.start(_typed("other", "stranger")()) as stranger,
        ):
            for who, route_key, priority in [
                (intruder, "demo.Vault.Open", Priority.NORMAL),  # denied by type
                (stranger, "demo.Vault.Open", Priority.NORMAL),  # no allow rule
                (client, "demo.Vault.Open", Priority.HIGH),  # above its highest priority
                (admin, "demo.Vault.Peek", Priority.NORMAL),  # a route it may not use
                (stranger, "demo.Vault.Missing", Priority.NORMAL),  # no route is no excuse
            ]:
                with pytest.raises(PermissionDenied) as info:
                    await who.call(v.actr_id, route_key, b"", priority=priority)
                assert info.value.code == "acl"
            with pytest.raises(PermissionDenied):
                await intruder.tell(v.actr_id, "demo.Vault.Open", b"")
            # The node keeps serving; allowed callers are unaffected.
            assert await client.call(v.actr_id, "demo.Vault.Peek", b"") == b"peeked"
            assert await client.call(v.actr_id, "demo.Vault.Open", b"", priority=Priority.LOW)
            assert await admin.call(v.actr_id, "demo.Vault.Open", b"", priority=Priority.HIGH)
            stats = v.statistics()
    assert vault.handled == [
        ("peek", client.actr_id),
        ("open", client.actr_id),
        ("open", admin.actr_id),
    ]
    assert stats.inbound.denied == 6
    assert stats.mailbox.accepted == 3  # nothing denied reached the mailbox
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        f"ACL refused demo.Vault.Open (NORMAL) from {intruder.actr_id}: "
        "denied by the deny rule for 'acme:intruder'"
    ) in warnings
    assert (
        f"ACL refused demo.Vault.Open (HIGH) from {client.actr_id}: priority HIGH is above "
        "NORMAL, the highest the allow rule for 'acme:client' permits"
    ) in warnings


async def test_config_acl_and_workload_acl_both_apply() -> None:
    vault = Guarded()
    # The node's Config allows only ops:*; the workload allows acme:client and ops:* (Open).
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(vault, acl=Acl(allow=[AclRule("ops:*")])) as v,
            realm.start(_typed("acme", "client")()) as client,
            realm.start(_typed("ops", "admin")()) as admin,
        ):
            with pytest.raises(PermissionDenied):
                await client.call(v.actr_id, "demo.Vault.Peek", b"")
            assert await admin.call(v.actr_id, "demo.Vault.Open", b"") == b"opened"
            with pytest.raises(PermissionDenied):
                await admin.call(v.actr_id, "demo.Vault.Peek", b"")


async def test_an_acl_of_an_instance_and_a_node_calling_itself() -> None:
    vault = Guarded()
    vault.acl = Acl(allow=[AclRule("acme:client")])  # instance attribute: replaces the class's
    with trio.fail_after(BOUND):
        async with LocalRealm() as realm, realm.start(vault) as v:
            # A node's calls to itself follow the same rules (acme:vault is not allowed).
            with pytest.raises(PermissionDenied):
                await v.call(v.actr_id, "demo.Vault.Peek", b"")


async def test_streams_from_refused_callers() -> None:
    vault = Guarded()
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(vault) as v,
            realm.start(_typed("acme", "client")()) as client,
            realm.start(_typed("acme", "intruder")()) as intruder,
        ):
            # Reliable lane: refused like an envelope, so the sender learns of it.
            with pytest.raises(StreamIncomplete) as info:
                async with intruder.open_stream(
                    v.actr_id, "vault-stream", lane=Lane.RELIABLE, timeout=5
                ) as stream:
                    await stream.send(b"bad")
            assert info.value.unacknowledged == 1
            # LatencyFirst: never acknowledged, so only dropped (and counted).
            async with intruder.open_stream(v.actr_id, "vault-stream") as stream:
                await stream.send(b"worse")
            async with client.open_stream(
                v.actr_id, "vault-stream", lane=Lane.RELIABLE, timeout=5
            ) as stream:
                await stream.send(b"good")
            await trio.testing.wait_all_tasks_blocked()
            denied = v.statistics().inbound.denied
    assert vault.chunks == [b"good"]
    assert denied == 4  # the reliable chunk and its end marker, the latency-first ones too


async def test_discovery_hides_the_node_from_types_its_acls_refuse() -> None:
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(Guarded()) as v,
            realm.start(_typed("acme", "client")()) as client,
            realm.start(_typed("acme", "intruder")()) as intruder,
            realm.start(_typed("ops", "admin")()) as admin,
            realm.start(_typed("other", "stranger")()) as stranger,
        ):
            vault = Guarded.actr_type
            assert await client.discover(vault) == [v.actr_id]
            assert await admin.discover(vault) == [v.actr_id]  # it may call one route
            assert await intruder.discover(vault) == []  # denied
            assert await stranger.discover(vault) == []  # not allowed
            # Hidden is not the protection: a refused caller that knows the id is still refused.
            with pytest.raises(PermissionDenied):
                await stranger.call(v.actr_id, "demo.Vault.Open", b"")


def test_the_examples_in_docs_acl_md_work(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "acl.md").read_text()
    python, toml = (
        re.search(rf"^```{lang}\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
        for lang in ("python", "toml")
    )
    assert python is not None
    assert toml is not None
    namespace: dict[str, object] = {}
    exec(compile(python.group(1), "docs/acl.md", "exec"), namespace)
    vault = namespace["Vault"]
    assert isinstance(vault, type)
    assert issubclass(vault, Workload)
    assert vault.acl is not None
    assert vault.acl.permits(ACME_ECHO, "demo.Vault.Open", Priority.NORMAL)
    assert not vault.acl.permits(ACME_ECHO, "demo.Vault.Open", Priority.HIGH)
    path = tmp_path / "Actr.toml"
    path.write_text(toml.group(1))
    acl = Config.from_file(path, environ={}).acl
    assert acl is not None
    assert acl.permits(ActrId("prod", 1, ActrType("ops", "admin")), "demo.Anything.At")
    assert not acl.permits(ActrId("prod", 2, ActrType("acme", "intruder")), "demo.Echo.Echo")
