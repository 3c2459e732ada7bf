"""Generated protobuf modules (``nox -s codegen`` regenerates them; do not edit)."""
