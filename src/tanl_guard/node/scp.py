# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The C-STORE SCP (and C-ECHO) of the listener: every storage SOP class, every transfer syntax, spool first.

A PACS sends instances as it stored them, compressed ones included (JPEG, JPEG-LS, JPEG 2000, RLE, deflate):
the SCP accepts all of pynetdicom's storage SOP classes with all of its transfer syntaxes, keeps the bytes as
received (its own transfer syntax, in the DICOM file format) and answers Success only once the instance is in
the spool. Statuses it answers otherwise: ``0xA700`` out of resources (the spool's size cap; logged),
``0xA701`` out of resources (the spool cannot be written), ``0xA900`` data set does not match SOP class (no
Study Instance UID), ``0xC210`` cannot understand (the data set cannot be decoded).
"""

from __future__ import annotations

import logging
from typing import Any

from .._optional import optional_import
from .spool import Spool, SpoolFull

__all__ = ["StorageSCP", "STATUS_SUCCESS", "STATUS_OUT_OF_RESOURCES", "STATUS_CANNOT_WRITE", "STATUS_NO_STUDY",
           "STATUS_CANNOT_UNDERSTAND"]

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_WRITE = 0xA701
STATUS_NO_STUDY = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC210


class StorageSCP:
    """A pynetdicom storage SCP that spools every instance before acknowledging it.

    Args:
        spool: where instances go.
        ae_title: this node's AE title.
        host: the address to listen on (``127.0.0.1`` by default: open it to the network on purpose).
        port: the TCP port (``0``: any free port, see :attr:`port`).
        require_called_aet: refuse associations whose called AE title is not ``ae_title``.
    """

    def __init__(self, spool: Spool, ae_title: str = "TANLGUARD", host: str = "127.0.0.1", port: int = 11112,
                 require_called_aet: bool = False) -> None:
        self.spool = spool
        self.ae_title = ae_title
        self.host = host
        self.requested_port = port
        self.require_called_aet = require_called_aet
        self._server: Any = None

    def _ae(self) -> Any:
        pynetdicom = optional_import("pynetdicom", "node", "the DICOM listener")
        from pynetdicom.sop_class import Verification

        ae = pynetdicom.AE(ae_title=self.ae_title)
        ae.require_called_aet = self.require_called_aet
        ae.maximum_associations = 16
        for context in pynetdicom.AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, pynetdicom.ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    def start(self) -> StorageSCP:
        """Start serving in background threads (one per association)."""
        pynetdicom = optional_import("pynetdicom", "node", "the DICOM listener")
        handlers = [(pynetdicom.evt.EVT_C_STORE, self._on_store), (pynetdicom.evt.EVT_C_ECHO, self._on_echo)]
        self._server = self._ae().start_server((self.host, self.requested_port), block=False, evt_handlers=handlers)
        return self

    @property
    def port(self) -> int:
        """The port it listens on (the real one when started with port 0)."""
        return int(self._server.server_address[1]) if self._server is not None else self.requested_port

    def stop(self) -> None:
        """Stop accepting associations and close the open ones (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @staticmethod
    def _on_echo(event: Any) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        try:
            dataset = event.dataset
            study_uid = str(dataset.get("StudyInstanceUID", "") or "").strip()
            sop_uid = str(event.request.AffectedSOPInstanceUID or dataset.get("SOPInstanceUID", "") or "").strip()
        except Exception as exc:  # the text of a decoding error may quote values: name its type only
            log.warning("refused an instance: its data set cannot be decoded (%s)", type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND
        if not study_uid or not sop_uid:
            log.warning("refused an instance without a Study or SOP Instance UID")
            return STATUS_NO_STUDY
        try:
            self.spool.store(event.encoded_dataset(include_meta=True), study_uid, sop_uid)
        except SpoolFull as exc:
            log.warning("refused an instance (out of resources): %s", exc)
            return STATUS_OUT_OF_RESOURCES
        except OSError as exc:
            log.error("refused an instance: the spool cannot be written (%s)", exc.strerror or type(exc).__name__)
            return STATUS_CANNOT_WRITE
        return STATUS_SUCCESS
