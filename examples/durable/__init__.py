"""The durable example: a receiver killed and restarted mid-stream, nothing lost."""
