"""Exception groups at the public boundary: a lone failure comes out as itself.

Trio's nurseries always raise an ``ExceptionGroup`` (``strict_exception_groups``), and a running
node is two nested nurseries, so one ``AuthError`` at start would reach the user as a group in a
group and ``except AuthError`` would miss it. :func:`sole_exception` removes only wrappers that
hold exactly one exception each, so nothing is ever dropped: a group of several failures (two
crashes, or a crash and a ``Cancelled``) stays a group, and a lone ``Cancelled`` or
``KeyboardInterrupt`` comes out as itself, which is how Trio's cancel scopes and ``trio.run``
expect to see them.
"""

from __future__ import annotations

from typing import NoReturn


def sole_exception(
    group: BaseExceptionGroup[BaseException], *, keep: BaseException | None = None
) -> BaseException | None:
    """The one exception inside ``group`` (through nested one-member groups), else ``None``.

    Args:
        group: what a nursery raised.
        keep: an exception to return as it is, never opened, when it is all there is: the
            user's own exception from an ``async with`` body, which may itself be a group.
            (Trio's cancel scopes rebuild a group they pass through, so a group is recognised
            by holding the very same leaf exceptions, and ``keep`` itself is returned.)
    """
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if keep is not None and _leaves(exc) == _leaves(keep):
            return keep
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def _leaves(exc: BaseException) -> list[int]:
    """Identities of the non-group exceptions in ``exc``, in order."""
    if not isinstance(exc, BaseExceptionGroup):
        return [id(exc)]
    return [leaf for member in exc.exceptions for leaf in _leaves(member)]


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` again with its own ``__context__``.

    A ``raise`` while another exception is being handled overwrites ``__context__`` with that
    one; Trio restores it the same way when its nurseries re-raise.
    """
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context  # no reference cycle through this frame
