# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""TANL: Test-time Activated Negative Labels (Zhang et al., CVPR 2026, arXiv 2603.25250).

Our own implementation of the method as the authors' ``actneg`` postprocessor (OpenOOD-VLM) computes it, in the
order of operations of its Sec. 3.7 / 9, with three engineering changes that do not change a result:

* the activation-aware score in closed form (float64 prefix sums) instead of M softmaxes;
* the queues keep the admitted embeddings as their state and the activation rows only as a rebuildable cache;
* top-M with ``torch.topk`` (O(N)) instead of a full sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._threads import intra_op_threads, machine_is_busy
from ..config import TANLConfig, config_from_dict, config_to_dict
from ..queue import ActivationQueue
from ..scores import _id_lse, _score_from_id_lse, activation_aware_score
from ..threshold import otsu_threshold
from .base import MIN_GEMM_ROWS, DetectorStep, LabelDetector

__all__ = ["TANLStep", "TANLDetector"]

_STATE_FORMAT = 1
_ROW_CHUNK = 256  # rows per product when building activation rows, to bound memory at ImageNet scale
_MAX_RUNS = 3  # runs of consecutive admitted images softmaxed in place; more are gathered first (two calls)


@dataclass(frozen=True, kw_only=True)
class TANLStep(DetectorStep):
    """One batch through TANL.

    Attributes:
        first_pass_scores: (B,) scores with the queue-only selection; the threshold and admission use these.
        confident_id: (B,) admitted into the queue of confident ID samples.
        confident_ood: (B,) admitted into the queue of confident OOD samples.
        selected: (M,) corpus indices of the activated negatives behind ``scores``, strongest first.
    """

    first_pass_scores: torch.Tensor
    confident_id: torch.Tensor
    confident_ood: torch.Tensor
    selected: torch.Tensor


def _check_order(order: Any, n: int, name: str) -> torch.Tensor | None:
    if order is None:
        return None
    order = torch.as_tensor(order, dtype=torch.long).flatten().cpu()
    if order.numel() != n or not torch.equal(torch.sort(order).values, torch.arange(n)):
        raise ValueError(f"{name} must be a permutation of range({n})")
    return order


def _check_admission(admit: Any, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    masks = tuple(torch.as_tensor(m, dtype=torch.bool, device=device).flatten() for m in admit)
    if len(masks) != 2 or any(m.numel() != n for m in masks):
        raise ValueError(f"admit must be two boolean masks of {n} entries (confident ID, confident OOD)")
    if bool((masks[0] & masks[1]).any()):
        raise ValueError("admit: an image cannot be admitted as both confident ID and confident OOD")
    return masks[0], masks[1]


class _Workspace:
    """Buffers a step reuses from batch to batch instead of allocating (and page-faulting) them every time.

    ``logits`` holds the (B, C + N) product and ``probs`` the softmax rows of the admitted images only (confident ID
    first, then confident OOD, each in batch order). At C + N = 71,000 and B = 256 in float32 they hold 139 MiB.
    """

    def __init__(self, rows: int, n_labels: int, dtype: torch.dtype, device: torch.device) -> None:
        self.rows = rows
        self.logits = torch.empty(rows, n_labels, dtype=dtype, device=device)
        self.probs = torch.empty(rows, n_labels, dtype=dtype, device=device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.logits, self.probs))


def _runs(index: torch.Tensor) -> list[tuple[int, int, int]]:
    """(source start, destination start, length) of the runs of consecutive values in a 1-D index tensor."""
    values = index.tolist()
    runs: list[tuple[int, int, int]] = []
    for position, value in enumerate(values):
        if runs and value == runs[-1][0] + runs[-1][2]:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((value, position, 1))
    return runs


class TANLDetector(LabelDetector):
    """Online OOD detector that mines, from the test stream, the corpus labels that OOD images activate.

    Args:
        id_text: (C, D) unit-norm ID label embeddings (text prompts and/or image prototypes).
        corpus: (N, D) unit-norm embeddings of the candidate negative labels (the whole corpus: TANL selects
            from all of it).
        logit_scale: kappa, the encoder's logit scale (100 for CLIP).
        config: method settings; the defaults are the paper's.
        kinds: accepted for the shared constructor shape; TANL selects over the whole corpus regardless of kind.

    Example::

        det = TANLDetector(id_text=T_id, corpus=T_cor, logit_scale=100.0, config=TANLConfig())
        det.reset(noise_features=encoder.encode_images(noise_images()))
        res = det.step(image_features)          # res.scores: higher = more in-distribution

    The detector is the single owner of the online state: use it from one thread (or behind a lock) in the
    main process, never inside a transform or a DataLoader worker.
    """

    name = "tanl"
    paper = "Zhang et al., Activation Matters: Test-time Activated Negative Labels for OOD Detection, CVPR 2026"
    config_class = TANLConfig
    accepts_admission = True

    def __init__(
        self,
        id_text: torch.Tensor,
        corpus: torch.Tensor,
        logit_scale: float,
        config: TANLConfig | None = None,
        *,
        kinds: torch.Tensor | None = None,
    ) -> None:
        super().__init__(id_text, corpus, logit_scale)
        if self.bank.n_corpus == 0:
            raise ValueError("TANL needs a non-empty corpus of candidate negative labels")
        self.config = config if config is not None else TANLConfig()
        self.n_negatives = min(self.config.n_negatives, self.bank.n_corpus)
        self._pos = self._new_queue()
        self._neg = self._new_queue()
        self.history = torch.empty(0, dtype=self.bank.dtype, device=self.bank.device)
        self.selected = torch.empty(0, dtype=torch.long, device=self.bank.device)
        self.threshold = float("nan")
        self.n_steps = 0
        self.n_seen = 0
        self._ready = False

    # ------------------------------------------------------------------ helpers
    def _new_queue(self) -> ActivationQueue:
        b = self.bank
        return ActivationQueue(self.config.queue_len, b.n_corpus, b.dim, b.dtype, b.device)

    def activation_rows(self, features: torch.Tensor) -> torch.Tensor:
        """(n, N) corpus activations: softmax over all C + N labels, restricted to the corpus columns."""
        n_id = self.bank.n_id
        out = features.new_empty(features.shape[0], self.bank.n_corpus)
        for start in range(0, features.shape[0], _ROW_CHUNK):
            logits = self.bank.logits(features[start : start + _ROW_CHUNK])
            out[start : start + _ROW_CHUNK] = torch.softmax(logits, dim=1)[:, n_id:]
        return out

    def _top_m(self, activation_difference: torch.Tensor) -> torch.Tensor:
        return torch.topk(activation_difference, self.n_negatives, largest=True, sorted=True).indices

    _workspace: _Workspace | None = None

    def _buffers(self, batch: int) -> _Workspace:
        """The reused step buffers, grown (never shrunk) to hold a batch of this size."""
        rows = max(batch, MIN_GEMM_ROWS)
        ws = self._workspace
        bank = self.bank
        if ws is None or ws.rows < rows or ws.logits.dtype != bank.dtype or ws.logits.device != bank.device:
            self._workspace = None  # free the old buffers before allocating the new ones
            ws = self._workspace = _Workspace(rows, bank.n_id + bank.n_corpus, bank.dtype, bank.device)
        return ws

    def _admitted_activations(
        self, ws: _Workspace, logits: torch.Tensor, index: torch.Tensor, threads: int
    ) -> torch.Tensor:
        """(k, N) activation rows of the images ``index`` in that order: the softmax of those rows only.

        Softmax is row-wise, so a row's probabilities do not depend on which other rows are computed with it. A
        few runs of consecutive images are read in place; otherwise the rows are gathered and transformed in
        place. The softmax runs on ``threads`` intra-op threads.
        """
        if logits.device.type != "cpu":  # an allocation costs nothing there: no in-place transform
            return torch.softmax(torch.index_select(logits, 0, index), dim=1)[:, self.bank.n_id :]
        runs = _runs(index)
        if len(runs) <= _MAX_RUNS:
            with intra_op_threads(threads):
                for source, target, length in runs:
                    torch.softmax(logits[source : source + length], dim=1, out=ws.probs[target : target + length])
        else:
            rows = ws.probs[: index.numel()]
            torch.index_select(logits, 0, index, out=rows)
            with intra_op_threads(threads):
                torch.softmax(rows, dim=1, out=rows)  # in place: each value is read before it is written
        return ws.probs[: index.numel(), self.bank.n_id :]

    def _gather_negatives(
        self,
        logits: torch.Tensor,
        selected: torch.Tensor,
        known: torch.Tensor | None = None,
        known_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, M) logits of the selected corpus labels, in rank order.

        Columns already gathered for ``known`` (``known_logits``, small and cache-resident) are copied from there;
        only the others are read from the (B, C + N) logits, which costs a cache miss per value.
        """
        n_id = self.bank.n_id
        if known is None or known_logits is None or known.numel() == 0:
            return torch.index_select(logits, 1, n_id + selected)
        ordered, order = torch.sort(known)
        at = torch.searchsorted(ordered, selected).clamp_(max=known.numel() - 1)
        found = ordered[at] == selected
        source = order[at]
        missing = torch.nonzero(~found).flatten()
        source[missing] = known.numel() + torch.arange(missing.numel(), device=source.device)
        extra = torch.index_select(logits, 1, n_id + selected[missing])
        return torch.index_select(torch.cat([known_logits, extra], dim=1), 1, source)

    @staticmethod
    def _top_of(selected: torch.Tensor, negative_logits: torch.Tensor, k: int) -> torch.Tensor | None:
        """:meth:`top_negatives` from the already gathered logits of the selected labels."""
        k = min(k, int(selected.numel()))
        if k == 0:
            return None
        return selected[torch.topk(negative_logits, k, dim=1).indices]

    @property
    def queue_sizes(self) -> tuple[int, int]:
        """(confident ID, confident OOD) entries currently queued."""
        return len(self._pos), len(self._neg)

    # ------------------------------------------------------------------ reset
    def reset(
        self,
        noise_features: torch.Tensor | None = None,
        id_order: Any = None,
        noise_order: Any = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Cold start (paper Eq. 10): queues from the ID texts as images and from noise-image embeddings.

        Args:
            noise_features: (K, D) embeddings of noise images (see :func:`tanl_guard.noise.noise_images`), or None
                to start with an empty OOD queue.
            id_order: permutation of range(C) giving the positive queue's order (its last L entries are kept).
            noise_order: permutation of range(K) giving the negative queue's order.
            generator: draws the orders that are not given (ID order first, then noise order); default: a
                generator seeded with ``config.seed``, so runs are reproducible without global seeding.
        """
        bank, cfg = self.bank, self.config
        id_text = bank.id_text
        if noise_features is None:
            noise = id_text.new_empty(0, bank.dim)
        else:
            noise = bank.prepare(noise_features, "noise_features")
        id_order = _check_order(id_order, bank.n_id, "id_order")
        noise_order = _check_order(noise_order, noise.shape[0], "noise_order")
        if generator is None:
            generator = torch.Generator().manual_seed(cfg.seed)
        if id_order is None:
            id_order = torch.randperm(bank.n_id, generator=generator)
        if noise_order is None:
            noise_order = torch.randperm(noise.shape[0], generator=generator)

        self._pos, self._neg = self._new_queue(), self._new_queue()
        pos_features = id_text[id_order.to(bank.device)][-cfg.queue_len :]
        neg_features = noise[noise_order.to(bank.device)][-cfg.queue_len :]
        self._pos.push(pos_features, self.activation_rows(pos_features))
        self._neg.push(neg_features, self.activation_rows(neg_features))
        selected = self._top_m(self._neg.mean() - self._pos.mean())

        # History: the ID texts (ID order) then the noise rows (original order), scored with the initial selection.
        columns = torch.cat([torch.arange(bank.n_id, device=bank.device), bank.n_id + selected])
        starters = torch.cat([id_text, noise])
        scores = [
            activation_aware_score(z[:, : bank.n_id], z[:, bank.n_id :], cfg.score_step)
            for z in (bank.logits(starters[i : i + _ROW_CHUNK], columns) for i in range(0, len(starters), _ROW_CHUNK))
        ]
        self.history = torch.cat(scores)[-cfg.history_len :]
        self.selected = selected
        self.threshold = otsu_threshold(self.history)
        self.n_steps = 0
        self.n_seen = 0
        self._ready = True

    # ------------------------------------------------------------------ step
    def step(self, image_features: torch.Tensor, admit: tuple[torch.Tensor, torch.Tensor] | None = None) -> TANLStep:
        """Score a batch and learn from it (paper Sec. 3.7). Bad input raises ValueError and changes nothing.

        Args:
            image_features: (B, D) image embeddings.
            admit: (confident ID, confident OOD) boolean masks of shape (B,) that replace the Otsu-gap rule for
                admission into the queues (and the batch-adaptive means), e.g. the verdicts of a feature gate
                fit on reference ID images; None keeps the paper's rule. The threshold and history are kept as usual.
        """
        # A step is one big product, one softmax and many small operations. On a busy machine every parallel region
        # of the small ones waits for a descheduled thread, so they run on one thread there. Column means over rows
        # (queue and batch means) add up in an order that depends on the thread count: they always run with the
        # configured threads, so a busy machine and an idle one give the same bits.
        threads = torch.get_num_threads()
        small = 1 if machine_is_busy() else threads
        with intra_op_threads(small):
            features = self.bank.prepare(image_features)
        admit = None if admit is None else _check_admission(admit, features.shape[0], features.device)
        if not self._ready:
            self.reset()
        cfg, n_id, dtype = self.config, self.bank.n_id, self.bank.dtype
        ws = self._buffers(features.shape[0])
        logits = self.bank._logits_into(features, ws.logits)  # (B, C + N), in the reused buffer
        mean_pos, mean_neg = self._pos.mean(), self._neg.mean()
        with intra_op_threads(small):
            predictions = logits[:, :n_id].argmax(dim=1)
            id_lse = _id_lse(logits[:, :n_id])  # shared by both passes
            first_selected = self._top_m(mean_neg - mean_pos)
            first_negatives = self._gather_negatives(logits, first_selected)
            first_pass = _score_from_id_lse(id_lse, first_negatives, cfg.score_step, dtype)

            history = torch.cat([self.history, first_pass])[-cfg.history_len :]
            threshold = otsu_threshold(history)
            confident_id = first_pass > threshold + cfg.gap * (1.0 - threshold)
            confident_ood = first_pass < threshold - cfg.gap * threshold
            if admit is not None:
                confident_id, confident_ood = admit

            # Only admitted images need their activation rows: the softmax runs over those rows alone.
            pos_index, neg_index = torch.nonzero(confident_id).flatten(), torch.nonzero(confident_ood).flatten()
            n_pos = pos_index.numel()
            admitted = self._admitted_activations(ws, logits, torch.cat([pos_index, neg_index]), threads)
            pos_rows, neg_rows = admitted[:n_pos], admitted[n_pos:]
            with intra_op_threads(threads):
                batch_pos = pos_rows.mean(dim=0) if pos_rows.shape[0] else None
                batch_neg = neg_rows.mean(dim=0) if neg_rows.shape[0] else None

            # Batch-adaptive means (Eq. 11-14): mix in this batch's confident samples, per side, only if it has some.
            if batch_pos is not None:
                mean_pos = cfg.alpha * mean_pos + (1.0 - cfg.alpha) * batch_pos
            if batch_neg is not None:
                mean_neg = cfg.alpha * mean_neg + (1.0 - cfg.alpha) * batch_neg
            selected = self._top_m(mean_neg - mean_pos)
            if torch.equal(selected, first_selected):  # same selection, same score: skip the second pass
                negatives, scores = first_negatives, first_pass.clone()
            else:
                negatives = self._gather_negatives(logits, selected, first_selected, first_negatives)
                scores = _score_from_id_lse(id_lse, negatives, cfg.score_step, dtype)
            top_negatives = self._top_of(selected, negatives, cfg.explain_top_k)

            # Commit: history and threshold, then the queues (new rows in batch order, the last L kept).
            self.history, self.threshold, self.selected = history, threshold, selected
            self._pos.push(features[pos_index], pos_rows)
            self._neg.push(features[neg_index], neg_rows)
            self.n_steps += 1
            self.n_seen += int(features.shape[0])
        return TANLStep(
            scores=scores,
            predictions=predictions,
            threshold=threshold,
            top_negatives=top_negatives,
            first_pass_scores=first_pass,
            confident_id=confident_id,
            confident_ood=confident_ood,
            selected=selected,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """What defines the online state (about 1.3 MB at D = 512, L = 300): queued embeddings, history, selection.

        The N-dimensional activation rows are not saved; :meth:`load_state_dict` rebuilds them.
        """
        if not self._ready:
            self.reset()
        state = super().state_dict()
        state.update(
            format=_STATE_FORMAT,
            config=config_to_dict(self.config),
            pos_features=self._pos.ordered_features().cpu(),
            pos_start=self._pos.start,
            neg_features=self._neg.ordered_features().cpu(),
            neg_start=self._neg.start,
            history=self.history.detach().cpu().clone(),
            selected=self.selected.detach().cpu().clone(),
            threshold=self.threshold,
            n_steps=self.n_steps,
            n_seen=self.n_seen,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the stream then continues exactly as if it had never stopped."""
        self._check_state_header(state)
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unsupported TANL state format {state.get('format')!r}")
        if config_from_dict(TANLConfig, state["config"]) != self.config:
            raise ValueError("state was saved with another TANLConfig; build the detector with TANLDetector.from_state")
        bank = self.bank
        pos_queue, neg_queue = self._new_queue(), self._new_queue()
        for queue, key in ((pos_queue, "pos"), (neg_queue, "neg")):
            feats = bank.prepare(state[f"{key}_features"], f"{key}_features") if len(state[f"{key}_features"]) else (
                bank.id_text.new_empty(0, bank.dim)
            )
            queue.restore(feats, self.activation_rows(feats), int(state[f"{key}_start"]))
        self._pos, self._neg = pos_queue, neg_queue
        self.history = state["history"].to(device=bank.device, dtype=bank.dtype).clone()
        self.selected = state["selected"].to(device=bank.device, dtype=torch.long).clone()
        self.threshold = float(state["threshold"])
        self.n_steps = int(state["n_steps"])
        self.n_seen = int(state["n_seen"])
        self._ready = True

    @classmethod
    def describe_state(cls, state: dict[str, Any], n_selected: int = 20) -> dict[str, Any]:
        """Threshold, queue sizes, history length, batches and images seen, leading selected corpus indices."""
        out = super().describe_state(state, n_selected)
        out.update(
            threshold=float(state["threshold"]),
            pos_queue=int(state["pos_features"].shape[0]),
            neg_queue=int(state["neg_features"].shape[0]),
            history=int(state["history"].numel()),
            batches=int(state["n_steps"]),
            images=int(state["n_seen"]),
            selected=[int(i) for i in state["selected"][:n_selected].tolist()],
        )
        return out

    @classmethod
    def from_state(
        cls, id_text: torch.Tensor, corpus: torch.Tensor, logit_scale: float, state: dict[str, Any]
    ) -> TANLDetector:
        """A detector with the saved configuration and state."""
        detector = cls(id_text, corpus, logit_scale, config_from_dict(TANLConfig, state["config"]))
        detector.load_state_dict(state)
        return detector
