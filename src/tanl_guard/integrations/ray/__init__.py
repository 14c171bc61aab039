# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard screen --engine ray``: the embedding job on a Ray cluster, the gate in the driver.

Ray itself is imported only when a run connects (``pip install 'tanl-guard[ray]'``).
"""

from __future__ import annotations

from .config import RayEngineConfig
from .engine import RayScreener, embedding_key
from .job import EmbeddingJob, EmbeddingSettings
from .session import import_ray, ray_session
from .shards import EmbeddingShard, ShardStore, batch_from_json, batch_to_json

__all__ = [
    "RayEngineConfig",
    "RayScreener",
    "embedding_key",
    "EmbeddingJob",
    "EmbeddingSettings",
    "import_ray",
    "ray_session",
    "EmbeddingShard",
    "ShardStore",
    "batch_from_json",
    "batch_to_json",
]
