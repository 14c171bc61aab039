# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A controlled generative model of CLIP-like embeddings with known ground truth, for the simulation benchmark.

Geometry (all vectors unit-norm in R^D; random directions in R^512 are nearly orthogonal, cos ~ +-0.044):

* ID labels: C class directions grouped into S superclasses, ``e_i = unit(lam * s_j + sqrt(1 - lam^2) * xi)``
  (classes of one superclass are similar, like ImageNet's 100+ dog breeds).
* Corpus (N words), each word ``w = unit(cw * centre + sqrt(1 - cw^2) * xi)`` around a concept centre:
  - *synonyms* of ID classes (a few per class, centre e_i) and *hypernyms* of the superclasses (centre s_j):
    they fire on ID images, a good selection must avoid them;
  - *near-ID OOD concepts*, centre ``unit(mu * s_j + near_link * e_k + rest * r)``: close to a superclass and to one
    look-alike class, so their words are close to many ID labels and NegLabel's distance rule drops them;
  - *far OOD concepts*, centre ``unit(f * e_k + rest * r)`` with a per-concept link ``f ~ U(far_link)`` to one
    random ID class: weakly linked concepts have words as far from the ID labels as any, strongly linked ones
    resemble an ID class (what lets MCM accept some far OOD images);
  - *context concepts* ("grass", "indoors"): appear in ID and OOD images alike;
  - a *noise* concept that the synthetic noise images embed near (TANL's cold start);
  - *background* words that no image depicts (most of a real 70k-word corpus), each linked with a weight
    ``b ~ U(bg_link)`` to a random ID class: a real corpus is full of words loosely related to the ID content
    (parts, attributes, co-hyponyms), which NegLabel's farthest-first rule skips.
* Unnamed OOD concepts (``n_far_unnamed``, ``n_near_unnamed``): concepts images can show but no corpus word
  describes (the stress case where the corpus does not name the stream's OOD).
* Images: ``v = unit(a * concept + b * context + n * xi)`` with a per-image signal strength a, an optional context
  b and isotropic noise; ID images use an ID class centre, OOD images an OOD concept centre.

The logit scale is 100 as for CLIP. Everything is drawn from one seeded numpy generator, so a spec and a seed
give the same embeddings on every machine (float32 at the end). :data:`CALIBRATED` is the spec whose baselines
reproduce the paper's ordering (``python -m benchmarks simulation --calibrate`` searches it again).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

__all__ = ["SimSpec", "SimWorld", "build_world", "SMALL", "FULL", "TINY", "CALIBRATED", "scaled"]


@dataclass(frozen=True)
class SimSpec:
    """Sizes and geometry of the simulated world.

    Args:
        n_id: C, ID classes.
        n_super: superclasses the ID classes are grouped in.
        corpus_size: N, corpus words in total (the rest after the structured groups are background words).
        dim: D.
        group_size: words per OOD / context concept.
        n_synonyms: corpus words around each ID class.
        n_hypernyms: corpus words around each superclass.
        n_far: far OOD concepts named in the corpus.
        n_near: near-ID OOD concepts named in the corpus (spread over the superclasses).
        n_far_unnamed: far OOD concepts with no corpus words.
        n_near_unnamed: near-ID OOD concepts with no corpus words.
        n_context: context concepts.
        lam: weight of the superclass in an ID class direction.
        mu: weight of the superclass in a near-ID OOD concept direction.
        near_link: weight of one specific ID class in a near-ID OOD concept direction (a look-alike class).
        far_link: (low, high) of the uniform weight of one random ID class in a far OOD concept direction.
        bg_link: (low, high) of the uniform weight of one random ID class in a background word.
        word_cos: cosine between a word of an OOD / context concept and the concept centre.
        synonym_cos: cosine between an ID class's synonym words and the class (near-duplicates of the label).
        signal: (low, high) of the uniform per-image weight of its concept.
        context_prob: probability that an image carries a context concept.
        context_weight: (low, high) weight of the context concept.
        noise_signal: weight of the noise concept in the synthetic noise images.
        logit_scale: kappa.
    """

    n_id: int = 1000
    n_super: int = 10
    corpus_size: int = 70000
    dim: int = 512
    group_size: int = 20
    n_synonyms: int = 5
    n_hypernyms: int = 100
    n_far: int = 400
    n_near: int = 100
    n_far_unnamed: int = 100
    n_near_unnamed: int = 25
    n_context: int = 50
    lam: float = 0.6
    mu: float = 0.35
    near_link: float = 0.6
    far_link: tuple[float, float] = (0.3, 0.3)
    bg_link: tuple[float, float] = (0.0, 0.0)
    word_cos: float = 0.8
    synonym_cos: float = 0.95
    signal: tuple[float, float] = (0.18, 0.34)
    context_prob: float = 0.6
    context_weight: tuple[float, float] = (0.10, 0.22)
    noise_signal: float = 0.3
    logit_scale: float = 100.0

    def as_dict(self) -> dict:
        return asdict(self)


#: The geometry used before the calibration (every far concept at link 0.3, background words unrelated to ID).
FULL = SimSpec()
#: The full-size world whose NegLabel / MCM reproduce the paper's ordering and levels (see docs/evaluation.md).
CALIBRATED = replace(FULL, far_link=(0.0, 0.5), bg_link=(0.0, 0.35), near_link=0.6)


def scaled(spec: SimSpec, size: str) -> SimSpec:
    """``spec``'s geometry at a smaller size: ``small`` (C = 200, N = 12,000, D = 256) or ``tiny``."""
    if size == "full":
        return spec
    if size == "small":
        return replace(spec, n_id=200, n_super=5, corpus_size=12000, dim=256, n_far=120, n_near=30, n_far_unnamed=30,
                       n_near_unnamed=10, n_context=15, n_hypernyms=40)
    if size == "tiny":
        return replace(spec, n_id=60, n_super=4, corpus_size=2500, dim=128, group_size=10, n_far=40, n_near=12,
                       n_far_unnamed=10, n_near_unnamed=4, n_context=6, n_synonyms=3, n_hypernyms=15)
    raise ValueError(f"unknown size {size!r}")


SMALL = scaled(FULL, "small")
TINY = scaled(FULL, "tiny")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class SimWorld:
    """The label embeddings and the concept layout of the corpus.

    Attributes:
        spec: the spec it was built from.
        id_text: (C, D) ID label embeddings.
        corpus: (N, D) corpus embeddings.
        word_concept: (N,) concept id of each word (-1 for background words).
        concept_kind: kind of every concept id: ``synonym``, ``hypernym``, ``near``, ``far``, ``context``,
            ``noise``, ``far_unnamed`` or ``near_unnamed``.
        concept_centre: (n_concepts, D) centre of every concept.
        concept_super: (n_concepts,) superclass of synonym/near concepts, -1 otherwise.
        concept_link: (n_concepts,) the far link of far concepts (NaN otherwise).
        id_super: (C,) superclass of each ID class.
    """

    spec: SimSpec
    id_text: np.ndarray
    corpus: np.ndarray
    word_concept: np.ndarray
    concept_kind: np.ndarray
    concept_centre: np.ndarray
    concept_super: np.ndarray
    concept_link: np.ndarray
    id_super: np.ndarray

    def concepts(self, kind: str) -> np.ndarray:
        return np.flatnonzero(self.concept_kind == kind)

    def words_of(self, concepts: np.ndarray) -> np.ndarray:
        """Corpus indices of the words of the given concepts."""
        return np.flatnonzero(np.isin(self.word_concept, concepts))

    def _images(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.spec
        n = centres.shape[0]
        a = rng.uniform(*s.signal, size=(n, 1))
        has_ctx = rng.random(n) < s.context_prob
        b = np.where(has_ctx, rng.uniform(*s.context_weight, size=n), 0.0)[:, None]
        ctx = self.concept_centre[rng.choice(self.concepts("context"), size=n)]
        rest = np.sqrt(np.clip(1.0 - a**2 - b**2, 0.0, None))
        xi = _unit(rng.standard_normal((n, s.dim)))
        return _unit(a * centres + b * ctx + rest * xi)

    def id_images(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n ID images, classes drawn uniformly; returns (features, class)."""
        cls = rng.integers(0, self.spec.n_id, size=n)
        return self._images(self.id_text[cls], rng), cls

    def ood_images(self, n: int, concepts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n OOD images of the given concepts (uniformly); returns (features, concept id)."""
        con = rng.choice(concepts, size=n)
        return self._images(self.concept_centre[con], rng), con

    def noise_features(self, n: int = 15, seed: int = 0) -> np.ndarray:
        """Embeddings of the synthetic noise images of TANL's cold start: near the 'noise' concept."""
        rng = np.random.default_rng(seed)
        centre = self.concept_centre[self.concepts("noise")[0]]
        a = self.spec.noise_signal
        return _unit(a * centre + np.sqrt(1 - a**2) * _unit(rng.standard_normal((n, self.spec.dim))))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.id_text).float(), torch.from_numpy(self.corpus).float()


def build_world(spec: SimSpec, seed: int = 0) -> SimWorld:
    """Draw the label embeddings of ``spec`` with ``seed``."""
    rng = np.random.default_rng(seed)
    d = spec.dim

    def around(centres: np.ndarray, cos: float | np.ndarray) -> np.ndarray:
        cos = np.asarray(cos, dtype=np.float64).reshape(-1, 1) if np.ndim(cos) else cos
        return _unit(cos * centres + np.sqrt(1 - cos**2) * _unit(rng.standard_normal(centres.shape)))

    supers = _unit(rng.standard_normal((spec.n_super, d)))
    id_super = np.arange(spec.n_id) % spec.n_super
    id_text = around(supers[id_super], spec.lam)

    kinds: list[str] = []
    centres: list[np.ndarray] = []
    csuper: list[int] = []
    links: list[float] = []

    def add(kind: str, block: np.ndarray, sup: list[int], link: list[float] | None = None) -> None:
        kinds.extend([kind] * block.shape[0])
        centres.append(block)
        csuper.extend(sup)
        links.extend(link if link is not None else [np.nan] * block.shape[0])

    add("synonym", id_text, id_super.tolist())  # one concept per ID class, centred on the class itself
    add("hypernym", supers, list(range(spec.n_super)))

    def near_block(n: int) -> tuple[np.ndarray, list[int]]:
        near_super = np.arange(n) % spec.n_super
        look_alike = np.array([rng.choice(np.flatnonzero(id_super == j)) for j in near_super], dtype=int)
        rest = np.sqrt(1 - spec.mu**2 - spec.near_link**2)
        block = _unit(spec.mu * supers[near_super] + spec.near_link * id_text[look_alike]
                      + rest * _unit(rng.standard_normal((n, d))))
        return block, near_super.tolist()

    def far_block(n: int) -> tuple[np.ndarray, list[float]]:
        link = rng.uniform(*spec.far_link, size=n)
        return around(id_text[rng.integers(0, spec.n_id, size=n)], link), link.tolist()

    block, sup = near_block(spec.n_near)
    add("near", block, sup)
    block, link = far_block(spec.n_far)
    add("far", block, [-1] * spec.n_far, link)
    for kind, count in (("context", spec.n_context), ("noise", 1)):
        add(kind, _unit(rng.standard_normal((count, d))), [-1] * count)
    block, sup = near_block(spec.n_near_unnamed)
    add("near_unnamed", block, sup)
    block, link = far_block(spec.n_far_unnamed)
    add("far_unnamed", block, [-1] * spec.n_far_unnamed, link)

    concept_kind = np.array(kinds)
    concept_centre = np.concatenate(centres)
    concept_super = np.array(csuper)
    per_kind = {"synonym": spec.n_synonyms, "hypernym": spec.n_hypernyms, "far_unnamed": 0, "near_unnamed": 0}
    word_concept_list: list[int] = []
    for cid, kind in enumerate(kinds):
        word_concept_list += [cid] * per_kind.get(kind, spec.group_size)
    n_structured = len(word_concept_list)
    if n_structured > spec.corpus_size:
        raise ValueError(f"corpus_size {spec.corpus_size} is smaller than the {n_structured} structured words")
    structured_concept = np.array(word_concept_list)
    cos = np.where(concept_kind[structured_concept] == "synonym", spec.synonym_cos, spec.word_cos)
    structured = around(concept_centre[structured_concept], cos)
    n_bg = spec.corpus_size - n_structured
    bg_link = rng.uniform(*spec.bg_link, size=n_bg)
    background = around(id_text[rng.integers(0, spec.n_id, size=n_bg)], bg_link)
    corpus = np.concatenate([structured, background])
    word_concept = np.r_[structured_concept, np.full(n_bg, -1)]
    # shuffle the corpus so that indices carry no information
    perm = rng.permutation(spec.corpus_size)
    corpus, word_concept = corpus[perm], word_concept[perm]
    return SimWorld(
        spec=spec,
        id_text=id_text.astype(np.float32),
        corpus=corpus.astype(np.float32),
        word_concept=word_concept,
        concept_kind=concept_kind,
        concept_centre=concept_centre,
        concept_super=concept_super,
        concept_link=np.array(links),
        id_super=id_super,
    )
