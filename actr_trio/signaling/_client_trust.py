"""Which signaling issuer the node's client trusts: ``Config.trust_anchor``, else the first
key it sees, pinned (trust on first use; kept in ``data_dir/issuer.pub`` when there is one)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import final

from .._identity import (
    ISSUER_PUB_FILE,
    decode_public_key,
    key_id,
    read_pinned_issuer,
    write_pinned_issuer,
)
from .._logging import SIGNALING

logger = logging.getLogger(SIGNALING)


@final
class IssuerTrust:
    """The issuer key every credential must be signed by, for one ``SignalingClient``.

    Args:
        anchor: ``Config.trust_anchor`` (a public key, hex or base64), or None to pin on first
            use.
        data_dir: ``Config.data_dir``, where a key pinned on first use is kept (None: for this
            process only).
    """

    def __init__(self, anchor: str | None, data_dir: Path | None) -> None:
        self._anchor = None if anchor is None else decode_public_key(anchor)
        self._data_dir = data_dir
        #: The trusted key: the anchor, the pinned key, or None until the first registration.
        self.pinned: bytes | None = self._anchor

    def load(self) -> None:
        """Read the key pinned by an earlier run, unless a key is trusted already."""
        if self._anchor is None and self.pinned is None:
            self.pinned = read_pinned_issuer(self._data_dir)

    def accept(self, issuer_key: bytes) -> None:
        """A registration's (verified) issuer: pinned if nothing was pinned yet (TOFU)."""
        if self.pinned is not None:
            return  # ClientProtocol already refused any other issuer
        self.pinned = issuer_key
        data_dir = self._data_dir
        if data_dir is not None:
            write_pinned_issuer(data_dir, issuer_key)
        where = (
            f"pinned in {data_dir / ISSUER_PUB_FILE}"
            if data_dir is not None
            else "for this run only: no data_dir"
        )
        logger.info(
            "trusting signaling issuer key %s on first use (%s); set Config.trust_anchor = %r "
            "to pin it explicitly",
            key_id(issuer_key),
            where,
            issuer_key.hex(),
        )

    def hint(self) -> str:
        """Where the trusted key came from, for the error when a server presents another."""
        if self._anchor is not None:
            return " (Config.trust_anchor)"
        data_dir = self._data_dir
        if data_dir is not None:
            return f" (pinned on first use in {data_dir / ISSUER_PUB_FILE}; delete it to re-pin)"
        return " (pinned at this node's first registration in this run)"
