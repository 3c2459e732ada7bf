"""The configuration reference: ``Config``'s fields rendered as ``docs/config-reference.md``,
and as the ``Attributes:`` of its docstring (one source for both: the fields' metadata)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, Final

import attrs

from ._config_rules import DOC, RULE, Rule, env_name

_TYPE_NAMES: Final = {"Synchronous": 'Literal["NORMAL", "FULL"]'}

_REFERENCE_HEAD: Final = """\
# Configuration reference

<!-- Generated from actr_trio.Config by actr_trio._config.config_reference(); do not edit.
     Regenerate: ACTR_UPDATE_GOLDEN=1 pytest tests/unit/test_config.py -k reference -->

A node's settings are one frozen `actr_trio.Config` value, built in one of two ways:

* in code: `Config(realm="prod", signaling_url="ws://127.0.0.1:8765", data_dir="state")`;
* from a file: `Config.from_file("Actr.toml")` reads the keys below from the top level of the
  TOML file or from an `[actr]` table, then lets `ACTR_<FIELD>` environment variables override
  them. Variables are text: numbers are parsed, lists are comma-separated
  (`ACTR_ICE_ADDRESSES=127.0.0.1,::1`), and an empty value means `None` for the fields that
  accept `None`.

Every value is checked when the `Config` is built. A wrong one raises
`actr_trio.errors.ConfigError` naming the field and where the value came from:

```text
Config.max_payload='big' is not an integer
Actr.toml: max_payload=0 must be > 0
ACTR_MAX_PAYLOAD='big' is not an integer
Config.signaling_url='localhost:8765' has no scheme: write 'ws://localhost:8765'
```

A key in the file that is not a field is an error; an `ACTR_*` variable that is not a field
draws a `UserWarning` that names the closest field
(`ACTR_REALMM is not a Config field; did you mean ACTR_REALM?`).

| Field | Type | Default | Environment variable | Accepts | Description |
| --- | --- | --- | --- | --- | --- |
"""


def _cell(text: str) -> str:
    # GitHub tables split cells on "|" even inside code spans, unless it is escaped.
    return text.replace("``", "`").replace("|", "\\|")


def render_reference(fields: Sequence[attrs.Attribute[Any]]) -> str:
    """The Markdown reference of ``fields`` (``Config``'s: ``docs/config-reference.md``)."""
    rows = []
    for field in fields:
        rule: Rule = field.metadata[RULE]
        type_name = _TYPE_NAMES.get(str(field.type), str(field.type))
        cells = (
            f"`{field.name}`",
            f"`{type_name}`",
            f"`{field.default!r}`",
            f"`{env_name(field.name)}`" if rule.env else "none (file or code only)",
            rule.accepts,
            field.metadata[DOC],
        )
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |\n")
    return _REFERENCE_HEAD + "".join(rows)


def field_docs(fields: Sequence[attrs.Attribute[Any]]) -> str:
    """The ``Attributes:`` section of ``Config``'s docstring: each field's description."""
    lines = ["", "", "    Attributes:"]
    for field in fields:
        text = f"{field.name}: {field.metadata[DOC]}"
        lines.append(
            textwrap.fill(
                text, 96, initial_indent=" " * 8, subsequent_indent=" " * 12, break_on_hyphens=False
            )
        )
    return "\n".join(lines) + "\n"
