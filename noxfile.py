"""Developer tasks: `nox -s tests`, `nox -s tests-stress`, `nox -s lint`, `nox -s typecheck`,
`nox -s demo`, `nox -s bench`, `nox -s codegen`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

PYTHON = "3.11"
TEST_DEPS = ["-e", ".[test]"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, property (Hypothesis) and integration tests (real SQLite, WebRTC, processes)."""
    session.install(*TEST_DEPS)
    _install_chromium(session)
    session.run("pytest", *(session.posargs or ["-q"]))


def _install_chromium(session: nox.Session) -> None:
    """The status page test drives a real headless Chromium (Debian's ``chromium``): install it
    with apt-get when it is missing. Without it (no apt-get, not root, offline) that test skips
    locally and fails in CI."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    apt = shutil.which("apt-get")
    if apt is None:
        session.warn("chromium is missing and there is no apt-get: the status page test skips")
        return
    # Any exit status: a failure is reported below, and must not stop the other tests.
    codes = list(range(256))
    session.run_install(apt, "install", "-y", "chromium", external=True, success_codes=codes)
    if not shutil.which("chromium"):
        session.run_install(apt, "update", external=True, success_codes=codes)
        session.run_install(apt, "install", "-y", "chromium", external=True, success_codes=codes)
    if not shutil.which("chromium"):
        session.warn(
            "could not install chromium (apt-get install -y chromium failed: not root?); the "
            "status page test skips (and fails in CI)"
        )


# A CPU burner that ends by itself (an hour at most) if nothing stops it.
BURNER = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end: pass"


@nox.session(python=PYTHON, name="tests-stress")
def tests_stress(session: nox.Session) -> None:
    """The suite N times in a row (default 5) while burners keep every core busy.

    `nox -s tests-stress -- 3` runs it 3 times; further arguments go to pytest. A test that
    depends on timing fails here, not on a newcomer's loaded machine.
    """
    session.install(*TEST_DEPS)
    args = list(session.posargs)
    runs = int(args.pop(0)) if args and args[0].isdigit() else 5
    burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(os.cpu_count() or 2)]
    try:
        for i in range(1, runs + 1):
            session.log(f"stress run {i}/{runs} with {len(burners)} CPU burners")
            session.run("pytest", "-q", "-p", "no:cacheprovider", *args)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The long runs: fault injection (10,000 envelopes and 50 receiver kills over WebRTC) and
    the mixed flood of issue 13 (offers, discovery, idle connections, streams, HIGH tells) for
    three minutes; ``nox -s soak -- --flood-seconds=600`` for longer."""
    session.install(*TEST_DEPS)
    session.run(
        "pytest",
        "-q",
        "tests/integration/test_faults.py",
        "tests/integration/test_soak_flood.py",
        "--soak",
        "--timeout=3600",
        "-s",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint + format check, and flake8-async for the rules ruff lacks."""
    session.install("ruff>=0.8", "flake8-async>=24.9")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The standalone flake8-async takes files, not folders.
    sources = sorted(str(p) for p in Path("actr_trio").rglob("*.py") if "_proto" not in p.parts)
    session.run(
        "flake8-async",
        "--enable=ASYNC102,ASYNC103,ASYNC120,ASYNC121",
        "--startable-in-context-manager=run",
        *sources,
    )


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on actr_trio/."""
    session.install("-e", ".[test]", "mypy>=1.13", "types-protobuf")
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The demo: a signaling server and nodes exchanging RPCs, priorities and a stream."""
    session.install("-e", ".")
    session.run("actr-trio", "demo", *session.posargs)


@nox.session(python=PYTHON)
def codegen(session: nox.Session) -> None:
    """Regenerate actr_trio/_proto from protos/actr and the examples' generated code."""
    session.install("-e", ".[codegen]")
    session.run(
        "python", "-c", "from actr_trio.codegen import generate_builtin; generate_builtin()"
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks beside their baselines (`-- --quick` for a short run, `-- --compare F.json`)."""
    session.install("-e", ".[metrics]", "pykka", "matplotlib")  # metrics: the W9 row
    session.run("python", "-m", "benchmarks.run", *session.posargs)
