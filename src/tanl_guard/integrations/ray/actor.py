# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The encoder actor: loads the weights once, embeds one decoded manifest batch per call, writes its shard.

The actor holds weights and nothing else: Ray Data's actor pools restart a dead actor and retry its batch
(without telling anyone), which is harmless here because a batch always gives the same embeddings and its shard
is written once, atomically. TANL's online state never comes near it: the gate in the driver owns it.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .shards import ShardStore, batch_to_json

__all__ = ["EncoderActor"]


class EncoderActor:
    """A Ray Data callable class: ``{"batch_id", "decoded"}`` rows in, one small row per batch out.

    Args:
        encoder_spec: the encoder spec (``surrogate``, ``biomedclip:local-dir:PATH``, ...), resolved here.
        device: where to embed (``cpu``, ``cuda``).
        threads: torch intra-op threads for embedding (the local engine's count gives the same embeddings).
        shard_dir: the shard folder of this embedding key.
        weights_sha256: the driver's encoder weights hash; an actor that loads other weights refuses to embed.
        trunk_features: also write the image trunk's features of the same forward pass.
    """

    def __init__(self, encoder_spec: str, device: str, threads: int, shard_dir: str, weights_sha256: str,
                 trunk_features: bool = False) -> None:
        from ..._offline import disable_telemetry
        from ...encoders import resolve

        # As in the driver: weights come from the node, never from a hub, and no library reports usage.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        disable_telemetry()
        self.threads = int(threads)
        self.trunk_features = bool(trunk_features)
        self.store = ShardStore(shard_dir)
        self.encoder = resolve(encoder_spec, device=device)
        self.weights_sha256 = str(self.encoder.weights_sha256)
        if weights_sha256 and self.weights_sha256 != weights_sha256:
            raise RuntimeError(
                f"the encoder weights on this worker (sha256 {self.weights_sha256[:12]}) differ from the driver's "
                f"({weights_sha256[:12]}): every node must have the same weights"
            )

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed each batch of ``rows`` and write its shard.

        Args:
            rows: Ray Data columns ``batch_id`` and ``decoded`` (a :class:`~tanl_guard.pipeline.ingest.DecodedBatch`
                with its views).

        Returns:
            columns ``batch_id``, ``views``, ``seconds`` (embedding time) and ``worker`` (process id).
        """
        from ..._threads import intra_op_threads

        ids, counts, seconds = [], [], []
        for batch_id, decoded in zip(rows["batch_id"], rows["decoded"]):
            start = time.perf_counter()
            if self.store.path(int(batch_id)).exists():  # a retried call whose first attempt got as far as the write
                ids.append(int(batch_id))
                counts.append(decoded.n_views)
                seconds.append(0.0)
                continue
            views = decoded.views()
            trunk = None
            if views:  # one call per manifest batch, as the local engine embeds it: the same chunking
                with intra_op_threads(self.threads):
                    if self.trunk_features:
                        encoding = self.encoder.encode_images(views, return_features=True)
                        features = encoding.embeddings.detach().cpu().numpy()
                        trunk = encoding.features.detach().cpu().numpy()
                    else:
                        features = self.encoder.encode_images(views).detach().cpu().numpy()
            else:
                features = np.zeros((0, int(self.encoder.embed_dim)), dtype=np.float32)
                if self.trunk_features:
                    trunk = np.zeros((0, int(self.encoder.feature_dim)), dtype=np.float32)
            keys = [(s.position, s.study_key, sv.series_key, i)
                    for s in decoded.studies for sv in s.series if sv.ok for i in range(len(sv.provenance))]
            self.store.write(int(batch_id), features, np.array([k[0] for k in keys], dtype=np.int64),
                             [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys], self.weights_sha256,
                             batch_to_json(decoded), worker=os.getpid(), trunk=trunk)
            ids.append(int(batch_id))
            counts.append(len(views))
            seconds.append(time.perf_counter() - start)
        return {"batch_id": np.asarray(ids, dtype=np.int64), "views": np.asarray(counts, dtype=np.int64),
                "seconds": np.asarray(seconds, dtype=np.float64),
                "worker": np.full(len(ids), os.getpid(), dtype=np.int64)}
