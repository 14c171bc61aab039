# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A DICOM peer named the way operators write it: ``AE@HOST:PORT``."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Peer"]

_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # AE titles: 16 printable ASCII characters, no backslash


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity on the network.

    Attributes:
        ae_title: its AE title (1-16 printable characters, no backslash).
        host: host name or address.
        port: TCP port.
    """

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not _AE.match(self.ae_title) or not self.ae_title.strip():
            raise ValueError(f"not a DICOM AE title (1-16 printable characters): {self.ae_title!r}")
        if not self.host:
            raise ValueError("a DICOM peer needs a host")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"port out of range: {self.port}")

    @classmethod
    def parse(cls, text: str) -> Peer:
        """Read ``AE@HOST:PORT`` (an IPv6 host in brackets: ``AE@[::1]:104``).

        Args:
            text: the peer as written on the command line.

        Raises:
            ValueError: when the text is not of that form.
        """
        ae, at, address = text.rpartition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon or not port.isdigit():
            raise ValueError(f"expected AE@HOST:PORT, got {text!r}")
        return cls(ae, host.strip("[]"), int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"
