"""The echo example: a service generated from ``protos/examples/echo.proto``."""
