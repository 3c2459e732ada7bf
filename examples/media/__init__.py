"""The media example: a synthetic video track published to another node, frames counted."""
