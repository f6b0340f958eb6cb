"""Plain data that flows between engines, parsers and the record services."""

from dataclasses import dataclass


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

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.ip, self.proto, self.port)

    @property
    def has_fingerprint(self) -> bool:
        return bool(self.service or self.product)
