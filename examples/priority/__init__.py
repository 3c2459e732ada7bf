"""The priority example: HIGH control messages overtaking a backlog of NORMAL work."""
