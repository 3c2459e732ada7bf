"""``actr-trio signaling``'s configuration: where realm secrets come from, and TLS files.

The server itself runs in tests/integration (test_signaling.py, test_signaling_tls.py); these
check the parsing and the refusals without starting anything.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from actr_trio.errors import ConfigError
from actr_trio.signaling._cli import (
    REALMS_ENV,
    add_arguments,
    load_realms_file,
    parse_realm,
    realms_from_env,
    run,
    server_ssl_context,
)

ALPHA = "alpha-secret-0123456789"
BETA = "b:secret-0123456789abc"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_parse_realm_splits_on_the_first_colon() -> None:
    assert parse_realm("demo:se:cret") == ("demo", "se:cret")
    for bad in ("demo", "demo:", ":secret"):
        with pytest.raises(ConfigError, match="NAME:SECRET"):
            parse_realm(bad)


@pytest.mark.parametrize(
    "text",
    [
        f'alpha = "{ALPHA}"\nbeta = "{BETA}"\n',
        f'[realms]\nalpha = "{ALPHA}"\nbeta = "{BETA}"\n',
        f"# comment\nalpha:{ALPHA}\n\nbeta:{BETA}\n",
    ],
    ids=["toml", "toml-table", "lines"],
)
def test_realms_file_formats(tmp_path: Path, text: str) -> None:
    path = private(tmp_path / "realms", text)
    assert load_realms_file(str(path)) == {"alpha": ALPHA, "beta": BETA}


def test_realms_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_realms_file(str(tmp_path / "missing"))
    bad = private(tmp_path / "bad.toml", "alpha = 3\n")
    with pytest.raises(ConfigError, match="SECRET"):
        load_realms_file(str(bad))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_realms_file_other_users_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "realms.toml"
    path.write_text(f'alpha = "{ALPHA}"\n')
    path.chmod(mode)
    message = (
        f"realms file '{path}' is accessible by other users (mode {mode:04o}); it holds "
        f"secrets: run 'chmod 600 {path}'"
    )
    with pytest.raises(ConfigError) as info:
        load_realms_file(str(path))
    assert str(info.value) == message
    path.chmod(0o400)  # owner read-only is fine too
    assert load_realms_file(str(path)) == {"alpha": ALPHA}


def test_realms_from_the_environment() -> None:
    environ = {REALMS_ENV: f" alpha:{ALPHA},beta:{BETA}\n gamma:{'g' * 16} "}
    assert realms_from_env(environ) == {"alpha": ALPHA, "beta": BETA, "gamma": "g" * 16}
    assert realms_from_env({}) == {}
    assert realms_from_env({REALMS_ENV: ""}) == {}
    with pytest.raises(ConfigError, match=f"^{REALMS_ENV}: realm 'alpha': expected NAME:SECRET$"):
        realms_from_env({REALMS_ENV: "alpha"})


def test_realm_on_the_command_line_still_works_but_warns(caplog: pytest.LogCaptureFixture) -> None:
    from actr_trio.signaling._cli import _realms

    with caplog.at_level(logging.WARNING):
        realms = _realms(parse("--realm", f"alpha:{ALPHA}"), {})
    assert realms == {"alpha": ALPHA}
    (record,) = caplog.records
    assert "--realm NAME:SECRET is deprecated" in record.getMessage()
    assert "visible in the process list" in record.getMessage()
    assert ALPHA not in record.getMessage()


def test_realms_combine_file_then_environment_then_command_line(tmp_path: Path) -> None:
    from actr_trio.signaling._cli import _realms

    path = private(tmp_path / "realms", f"alpha:{'f' * 16}\nbeta:{'f' * 17}\n")
    environ = {REALMS_ENV: f"beta:{'e' * 16},gamma:{'e' * 17}"}
    args = parse("--realms-file", str(path), "--realm", f"gamma:{'c' * 16}")
    assert _realms(args, environ) == {"alpha": "f" * 16, "beta": "e" * 16, "gamma": "c" * 16}
    assert _realms(parse(), {}) is None  # nothing configured: the open development server


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (
            ["--realm", "alpha:short"],
            {},
            "realm 'alpha': its secret is shorter than 16 bytes",
        ),
        ([], {REALMS_ENV: "alpha:short"}, "realm 'alpha': its secret is shorter than 16 bytes"),
        (["--tls-key", "server.key"], {}, "--tls-key needs --tls-cert"),
        (["--tls-cert", "missing.pem"], {}, "cannot load the TLS certificate and key from"),
    ],
    ids=["short-cli", "short-env", "key-without-cert", "missing-cert"],
)
def test_configuration_errors_exit_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv(REALMS_ENV, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert run(parse("--port", "0", *argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"actr-trio signaling: {message}")
    assert err.count("\n") == 1
    assert "short" not in err.replace("shorter", "")  # the secret itself is never shown


def test_server_ssl_context_loads_a_pem_chain_and_key(tmp_path: Path) -> None:
    from tlsfiles import write_tls_files

    files = write_tls_files(tmp_path)
    server_ssl_context(str(files.server_cert), str(files.server_key))
    combined = tmp_path / "combined.pem"  # --tls-cert alone: the key in the same file
    combined.write_bytes(files.server_cert.read_bytes() + files.server_key.read_bytes())
    server_ssl_context(str(combined), None)
    with pytest.raises(ConfigError, match="cannot load the TLS certificate and key"):
        server_ssl_context(str(files.server_cert), None)  # no key anywhere
