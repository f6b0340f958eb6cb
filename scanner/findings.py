"""Plain data that flows between engines, parsers and the record services."""

import ipaddress
from dataclasses import dataclass

from portmon.text import one_line
from scanner.scope import normalise_address

TEXT_FIELDS = ("service", "product", "version", "extrainfo", "cpe")


@dataclass(frozen=True)
class Finding:
    """An open port, with the fingerprint when one is known."""

    ip: str
    port: int
    proto: str = "tcp"
    service: str = ""
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    cpe: str = ""

    def __post_init__(self) -> None:
        # Banners and fingerprints come from the network or a file: stored on one line, so
        # that "RDP\n\nAll clear: ..." cannot forge a line of an email or a report.
        for name in TEXT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, one_line(value))
        # One spelling per address (::ffff:a.b.c.d is a.b.c.d, IPv6 compressed), so keys,
        # host rows and scope checks agree. Text that is no address is kept as given: the
        # engines' and parsers' own checks refuse it with their message; so is a non-str
        # (ip_address(2130706433) would happily make an address of an integer).
        if not isinstance(self.ip, str):
            return
        try:
            address = normalise_address(ipaddress.ip_address(self.ip))
        except ValueError:
            return
        object.__setattr__(self, "ip", str(address))

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.ip, self.proto, self.port)

    @property
    def has_fingerprint(self) -> bool:
        return bool(self.service or self.product)
