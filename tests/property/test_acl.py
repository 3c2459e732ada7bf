"""Hypothesis: the ACL decision rules hold for any rules and any caller.

* Deny wins: if a deny rule matches, nothing the allow list holds lets the envelope in.
* No allow, no entry: if no allow rule matches (at that priority), it is refused.
* Otherwise it is accepted; and a guard over several ACLs accepts exactly what all accept.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actr_trio import Acl, AclRule, ActrId, ActrType, Priority
from actr_trio._acl import AclGuard

# Small alphabets, so that patterns and callers actually meet.
names = st.sampled_from(["a", "b", "ab"])
name_patterns = st.sampled_from(["a", "b", "ab", "*", "a*", "*b"])
callers = st.builds(
    lambda m, n, r, s: ActrId(r, s, ActrType(m, n)), names, names, names, st.integers(0, 3)
)
route_keys = st.none() | st.sampled_from(["p.S.M", "p.S.N", "q.T.M"])
route_patterns = st.lists(st.sampled_from(["p.S.M", "p.S.*", "q.*", "*.M"]), max_size=2)
priorities = st.none() | st.sampled_from(list(Priority))


@st.composite
def rules(draw: st.DrawFn, *, capped: bool) -> AclRule:
    caller = draw(st.just("*") | st.builds("{}:{}".format, name_patterns, name_patterns))
    return AclRule(
        caller,
        realm=draw(name_patterns),
        routes=tuple(draw(route_patterns)),
        max_priority=draw(st.none() | st.sampled_from(list(Priority))) if capped else None,
    )


acls = st.builds(
    Acl,
    allow=st.lists(rules(capped=True), max_size=4),
    deny=st.lists(rules(capped=False), max_size=3),
)


@settings(max_examples=500, deadline=None)
@given(acl=acls, caller=callers, route_key=route_keys, priority=priorities)
def test_deny_wins_and_no_allow_means_deny(
    acl: Acl, caller: ActrId, route_key: str | None, priority: Priority | None
) -> None:
    denied = any(rule.matches(caller, route_key) for rule in acl.deny)
    allowed = any(
        rule.matches(caller, route_key) and rule.allows_priority(priority) for rule in acl.allow
    )
    verdict = acl.permits(caller, route_key, priority)
    if denied:
        assert not verdict  # deny wins
        # ... even with an allow rule that matches everything added.
        everything = Acl(allow=[*acl.allow, AclRule("*")], deny=acl.deny)
        assert not everything.permits(caller, route_key, priority)
    elif not allowed:
        assert not verdict  # no matching allow: deny
    else:
        assert verdict


@settings(max_examples=200, deadline=None)
@given(caller=callers, route_key=route_keys, priority=priorities)
def test_an_empty_acl_refuses_everyone(
    caller: ActrId, route_key: str | None, priority: Priority | None
) -> None:
    assert not Acl().permits(caller, route_key, priority)
    assert not Acl(deny=[AclRule("*")]).permits(caller, route_key, priority)


@settings(max_examples=300, deadline=None)
@given(
    first=acls,
    second=acls,
    calls=st.lists(st.tuples(callers, route_keys, priorities), min_size=1, max_size=10),
)
def test_a_guard_accepts_what_every_acl_accepts(
    first: Acl, second: Acl, calls: list[tuple[ActrId, str | None, Priority | None]]
) -> None:
    guard = AclGuard([first, second])
    for caller, route_key, priority in calls * 2:  # twice: the cached answer is the same
        expected = first.permits(caller, route_key, priority) and second.permits(
            caller, route_key, priority
        )
        assert (guard.refusal(caller, route_key, priority) is None) is expected
