# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""How ``tanl-guard screen --engine ray`` uses a Ray cluster: where it is, how many encoder actors, what each holds."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RayEngineConfig"]


@dataclass(frozen=True)
class RayEngineConfig:
    """Settings of the Ray engine.

    Attributes:
        address: a running cluster (``ray://...`` or ``HOST:PORT``); None starts a local Ray instance on this
            machine for the run (and stops it afterwards).
        workers: encoder actors in the pool (``--workers``); each loads the weights once. The shards go to the
            screening's work directory (``ScreenConfig.work_dir``), which every node must reach (a shared
            filesystem on a multi-node cluster).
        worker_cpus: CPUs each encoder actor reserves; None: 1, or less where the cluster is too small for
            ``workers`` actors and the decode tasks (a stage that cannot get a CPU hangs without an error).
        worker_gpus: GPUs each encoder actor reserves; None: 1 when the cluster has a GPU per worker, else 0.
        decode_cpus: CPUs each decode task reserves (fractional: decoding is mostly I/O and waits).
        encoder_threads: torch intra-op threads in each actor; None: the driver's count, which is what the local
            engine uses (Ray sets ``OMP_NUM_THREADS=1`` in workers; pinning keeps the engines' embeddings equal).
        local_cpus: CPUs of the local instance started when ``address`` is None (None: all of this machine's).
        stall_timeout_s: fail the run when no stage makes progress for this long (a stage waiting for resources
            that never come would otherwise wait forever).
    """

    address: str | None = None
    workers: int = 1
    worker_cpus: float | None = None
    worker_gpus: float | None = None
    decode_cpus: float = 0.25
    encoder_threads: int | None = None
    local_cpus: int | None = None
    stall_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for name in ("worker_cpus", "worker_gpus"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.decode_cpus <= 0:
            raise ValueError(f"decode_cpus must be > 0, got {self.decode_cpus}")
        if self.encoder_threads is not None and self.encoder_threads < 1:
            raise ValueError(f"encoder_threads must be >= 1, got {self.encoder_threads}")
        if self.stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {self.stall_timeout_s}")

    def reservations(self, cluster_cpus: float, cluster_gpus: float) -> tuple[float, float]:
        """CPUs and GPUs per encoder actor on a cluster of this size.

        Args:
            cluster_cpus: CPUs of the cluster (``ray.cluster_resources()["CPU"]``).
            cluster_gpus: GPUs of the cluster.

        Raises:
            ValueError: when the actors and one decode task cannot all get their reservation at once (the
                pipeline would hang silently instead).
        """
        gpus = self.worker_gpus
        if gpus is None:
            gpus = 1.0 if cluster_gpus >= self.workers else 0.0
        cpus = self.worker_cpus
        if cpus is None:  # leave room for at least one decode task beside the pool
            cpus = min(1.0, max(cluster_cpus - self.decode_cpus, 0.0) / self.workers)
            cpus = float(f"{cpus:.3g}")
        need = self.workers * cpus + self.decode_cpus
        if need > cluster_cpus + 1e-9 or self.workers * gpus > cluster_gpus + 1e-9 or (cpus == 0 and gpus == 0):
            raise ValueError(
                f"the cluster has {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs: {self.workers} encoder workers "
                f"({cpus:g} CPU, {gpus:g} GPU each) and a decode task ({self.decode_cpus:g} CPU) do not fit; "
                "use fewer --workers or a larger cluster"
            )
        return cpus, gpus
