# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The guard as a DICOM node: C-STORE SCP, spool, study completion, gating in batches, forwarding, status.

``tanl-guard listen`` runs :class:`Listener`; pynetdicom is needed (``pip install 'tanl-guard[node]'``) and is
imported only when the node starts.
"""

from __future__ import annotations

from .completion import CompleteStudy, StudyTracker
from .config import ListenConfig
from .forwarder import DeliveryError, FolderDestination, Forwarder, PeerDestination
from .gate import BatchResult, DeferredAudit, judge_folder
from .listener import Listener
from .peer import Peer
from .scp import StorageSCP
from .spool import Spool, SpoolFull
from .status import StatusServer

__all__ = [
    "BatchResult",
    "CompleteStudy",
    "DeferredAudit",
    "DeliveryError",
    "FolderDestination",
    "Forwarder",
    "ListenConfig",
    "Listener",
    "Peer",
    "PeerDestination",
    "Spool",
    "SpoolFull",
    "StatusServer",
    "StorageSCP",
    "StudyTracker",
    "judge_folder",
]
