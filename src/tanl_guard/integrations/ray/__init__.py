# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard screen --engine ray``: the embedding job on a Ray cluster, the gate in the driver.

Ray itself is imported only when a run connects (``pip install 'tanl-guard[ray]'``).
"""

from __future__ import annotations

from .config import RayEngineConfig
from .shards import EmbeddingShard, ShardStore, batch_from_json, batch_to_json

__all__ = ["RayEngineConfig", "EmbeddingShard", "ShardStore", "batch_from_json", "batch_to_json"]
