"""A slow, literal implementation of TANL from the method text (tanl_method.md, Sec. 3.7 and 9).

It follows the authors' code path on purpose: N-dimensional activation rows in plain tensors, M softmaxes of
growing width for the score, Otsu by brute force over the grid with torch.var. Tests compare the product's
fast detector against it.
"""

from __future__ import annotations

import torch


def m_softmax_score(id_logits: torch.Tensor, neg_logits: torch.Tensor, step: int) -> torch.Tensor:
    """Eq. 15 as the official loop computes it: one softmax per prefix, sum of the ID probabilities."""
    n_neg = neg_logits.shape[1]
    if step == 0:
        probs = torch.softmax(torch.cat([id_logits, neg_logits], 1), 1)
        return probs[:, : id_logits.shape[1]].sum(1)
    prefixes = []
    j = 1
    while True:
        p = min(j * step, n_neg)
        prefixes.append(p)
        if p == n_neg:
            break
        j += 1
    total = torch.zeros(id_logits.shape[0], dtype=id_logits.dtype)
    for p in prefixes:
        probs = torch.softmax(torch.cat([id_logits, neg_logits[:, :p]], 1), 1)
        total += probs[:, : id_logits.shape[1]].sum(1)
    return total / len(prefixes)


def brute_otsu(history: torch.Tensor) -> float:
    grid = torch.arange(0, 1, 0.01)
    crits = []
    for th in grid:
        hi = history >= th
        if bool(hi.all()) or not bool(hi.any()):
            crits.append(float("inf"))
            continue
        w1 = hi.double().mean()
        w0 = 1 - w1
        crits.append(float(w0 * history[~hi].double().var(unbiased=False) + w1 * history[hi].double().var(unbiased=False)))
    crits = torch.tensor(crits, dtype=torch.float64)
    tied = torch.nonzero(crits == crits.min()).flatten()
    return float(grid[tied[len(tied) // 2]])


class ReferenceTANL:
    def __init__(self, id_text, corpus, kappa, n_negatives, queue_len, gap, alpha, step, history_len):
        self.T_id, self.T_all = id_text, torch.cat([id_text, corpus])
        self.C = id_text.shape[0]
        self.kappa, self.M, self.L, self.g, self.alpha, self.step_k, self.cap = (
            kappa, min(n_negatives, corpus.shape[0]), queue_len, gap, alpha, step, history_len)

    def _logits(self, v):
        return (self.kappa * v) @ self.T_all.T

    def _rows(self, v):
        return torch.softmax(self._logits(v), 1)[:, self.C:]

    def _saa(self, z, sel):
        return m_softmax_score(z[:, : self.C], z[:, self.C + sel], self.step_k)

    def _top(self, diff):
        return torch.argsort(diff, descending=True, stable=True)[: self.M]

    def reset(self, noise, id_order, noise_order):
        self.Qpos = self._rows(self.T_id)[id_order][-self.L:]
        self.Qneg = self._rows(noise)[noise_order][-self.L:]
        sel = self._top(self.Qneg.mean(0) - self.Qpos.mean(0))
        self.H = torch.cat([self._saa(self._logits(self.T_id), sel), self._saa(self._logits(noise), sel)])[-self.cap:]
        self.sel = sel

    def step(self, v):
        z = self._logits(v)
        a = torch.softmax(z, 1)[:, self.C:]
        mp = self.Qpos.mean(0) if len(self.Qpos) else torch.zeros(a.shape[1], dtype=a.dtype)
        mn = self.Qneg.mean(0) if len(self.Qneg) else torch.zeros(a.shape[1], dtype=a.dtype)
        s0 = self._saa(z, self._top(mn - mp))
        self.H = torch.cat([self.H, s0])[-self.cap:]
        gam = brute_otsu(self.H)
        pos = s0 > gam + self.g * (1 - gam)
        neg = s0 < gam - self.g * gam
        if pos.any():
            mp = self.alpha * mp + (1 - self.alpha) * a[pos].mean(0)
        if neg.any():
            mn = self.alpha * mn + (1 - self.alpha) * a[neg].mean(0)
        sel = self._top(mn - mp)
        s = self._saa(z, sel)
        self.Qpos = torch.cat([self.Qpos, a[pos]])[-self.L:]
        self.Qneg = torch.cat([self.Qneg, a[neg]])[-self.L:]
        return dict(scores=s, first=s0, threshold=gam, pos=pos, neg=neg, selected=sel, pred=z[:, : self.C].argmax(1))
