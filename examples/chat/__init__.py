"""The chat example: rooms over the fast path (streams), history over the state path."""
