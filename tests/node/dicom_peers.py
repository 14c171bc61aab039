# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Real DICOM peers for the node tests: a pynetdicom storage receiver and a sender, both on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

__all__ = ["Receiver", "send_files", "echo", "dicom_files", "dataset_bytes"]


class Receiver:
    """A storage SCP that records what it receives: instance UID -> (study UID, transfer syntax, sha256).

    Args:
        ae_title: its AE title.
        port: its port (0: any free port; the same port can be restarted with :meth:`start`).
        refuse: answer this status instead of storing (e.g. 0xA700), while set.
    """

    def __init__(self, ae_title: str = "AINODE", port: int = 0, refuse: int | None = None) -> None:
        self.ae_title = ae_title
        self.port = port
        self.refuse = refuse
        self.instances: dict[str, tuple[str, str, str]] = {}
        self.stores = 0
        self._lock = threading.Lock()
        self._server = None

    def start(self) -> Receiver:
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event) -> int:
        if self.refuse is not None:
            return self.refuse
        data = event.encoded_dataset(include_meta=False)
        ds = event.dataset
        with self._lock:
            self.stores += 1
            self.instances[str(ds.SOPInstanceUID)] = (str(ds.StudyInstanceUID), str(event.context.transfer_syntax),
                                                      hashlib.sha256(data).hexdigest())
        return 0x0000

    def studies(self) -> dict[str, int]:
        """Instances received per study UID."""
        out: dict[str, int] = {}
        with self._lock:
            for study, _, _ in self.instances.values():
                out[study] = out.get(study, 0) + 1
        return out


def dicom_files(folder: Path) -> list[Path]:
    """The files of a folder that carry the file meta a C-STORE needs (SOP class, instance, transfer syntax)."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            meta = read_file_meta_info(path)
        except Exception:
            continue
        if all(k in meta for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")):
            out.append(path)
    return out


def send_files(port: int, files: list[Path], ae_title: str = "TANLGUARD", on_first=None) -> dict[Path, int]:
    """C-STORE each file with its own transfer syntax; its status (-1: not sent, no context or no answer).

    ``on_first`` is called once the association is established, before the first store.
    """
    import pynetdicom

    pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True  # the bytes as stored
    contexts = {}
    for path in files:
        meta = read_file_meta_info(path)
        contexts[path] = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    ae = AE(ae_title="SENDER")
    for sop, ts in sorted(set(contexts.values())):
        ae.add_requested_context(sop, ts)
    statuses: dict[Path, int] = {}
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return dict.fromkeys(files, -1)
    if on_first is not None:
        on_first()
    try:
        for path in files:
            try:
                status = assoc.send_c_store(path)
            except Exception:  # no context, or the peer died mid-association
                statuses[path] = -1
                continue
            statuses[path] = int(status.Status) if status and "Status" in status else -1
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def echo(port: int, ae_title: str = "TANLGUARD") -> bool:
    """Whether a C-ECHO to 127.0.0.1:port succeeds."""
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a DICOM file, after its preamble and file meta (what a C-STORE carries)."""
    from pynetdicom.dsutils import split_dataset

    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]
