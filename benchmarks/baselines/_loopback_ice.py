"""The one hook that keeps raw aiortc on 127.0.0.1 (benchmark processes only).

aioice 0.13 gathers host candidates from ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)``
(called from ``Connection.gather_candidates``), which enumerates every interface *except*
127.0.0.1 and ::1. Loopback-only benchmarks replace it in this process with a function that
returns ``["127.0.0.1"]``. With ``RTCConfiguration(iceServers=[])`` no STUN/TURN server is
contacted either, and :func:`assert_loopback_sdp` refuses any SDP that carries another address
(which would also keep aioice from ever resolving ``.local`` mDNS names).
"""

from __future__ import annotations

AIOICE_VERSION = "0.13.0"  # the function replaced below is internal: check before patching
LOOPBACK = "127.0.0.1"


def restrict_ice_to_loopback() -> None:
    import aioice
    import aioice.ice

    if aioice.__version__ != AIOICE_VERSION:
        raise RuntimeError(
            f"aioice {aioice.__version__} installed; the loopback hook was written for "
            f"{AIOICE_VERSION} (aioice.ice.get_host_addresses): check it before benchmarking"
        )
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        raise RuntimeError("aioice.ice.get_host_addresses is gone: update the loopback hook")

    def loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [LOOPBACK] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_host_addresses


def assert_loopback_sdp(sdp: str) -> None:
    """Raise unless every ICE candidate in ``sdp`` is a 127.0.0.1 host candidate."""
    candidates = [
        line.split() for line in sdp.splitlines() if line.startswith(("a=candidate:", "candidate:"))
    ]
    if not candidates:
        raise RuntimeError("SDP carries no ICE candidate")
    for fields in candidates:
        # candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
        address, kind = fields[4], fields[7]
        if address != LOOPBACK or kind != "host":
            raise RuntimeError(f"non-loopback ICE candidate in SDP: {' '.join(fields)}")
