# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Decode selected frames of one DICOM file with pydicom 3 and map them to float32 in [0, 1]."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tanl_guard.dicom.codestream import CODESTREAM_SYNTAXES, check_codestreams
from tanl_guard.dicom.header import DEFER_BYTES, DEFLATED, native_frame_bytes, read_header
from tanl_guard.dicom.outcomes import Reason, ReasonError
from tanl_guard.dicom.vocabulary import Term, detail, errno_name, photometric_term, uid_name

__all__ = ["DecodeError", "decode_frames", "reduce_frame", "to_unit_range", "missing_decoder_packages"]

_J2K_FAMILY = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
               "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
_WHOLE_READ_LIMIT = 256 * 1024 * 1024
_FG_TAGS = [0x52009229, 0x52009230]  # Shared / Per-frame Functional Groups Sequence (Enhanced objects)
_PACKAGES = {"gdcm": "python-gdcm (Apache-2.0)", "pyjpegls": "pyjpegls", "pillow": "pillow"}


class DecodeError(ReasonError):
    """A file's pixels could not be decoded; carries the reason category for the file's outcome.

    Args:
        reason: the reason category.
        detail: a phrase from the closed vocabulary (:mod:`tanl_guard.dicom.vocabulary`).
    """


def _plugin_package(plugin: str, ts: str) -> Term | None:
    if plugin == "pylibjpeg":
        if ts in _J2K_FAMILY:
            return Term("pylibjpeg-openjpeg")
        if ts == "1.2.840.10008.1.2.5":
            return Term("pylibjpeg-rle")
        return Term("pylibjpeg-libjpeg (GPL-3.0)")
    name = _PACKAGES.get(plugin)
    return Term(name) if name else None


def missing_decoder_packages(ts: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    """Packages that would add a decoder for a transfer syntax (plugins not installed or not allowed).

    Args:
        ts: Transfer Syntax UID.
        allowed: the plugin allow-list in use (``None``: all installed plugins are allowed).
    """
    from pydicom.pixels import get_decoder

    dec = get_decoder(ts)
    names = [m.split(" - ", 1)[0] for m in dec.missing_dependencies]
    if allowed is not None:
        names += [p for p in dec.available_plugins if p not in allowed]
    if ts == "1.2.840.10008.1.2.4.51":  # 12-bit JPEG: only libjpeg decodes it (gdcm did not, in tests)
        names.sort(key=lambda n: n != "pylibjpeg")
    packages = [_plugin_package(n, ts) for n in dict.fromkeys(names)]
    return [p for p in packages if p is not None]


def _missing(ts: str, allowed: tuple[str, ...] | None, why: str) -> DecodeError:
    pkgs = missing_decoder_packages(ts, allowed)
    if pkgs:
        hint = detail("; install one of: {p} (pip install 'tanl-guard[codecs]')", p=Term(", ".join(pkgs)))
    else:
        hint = ""
    return DecodeError(Reason.MISSING_DECODER, detail(why + " for {ts}", ts=uid_name(ts)) + hint)


def _classify(exc: BaseException, ts: str, allowed: tuple[str, ...] | None) -> DecodeError:
    """Map a pydicom/codec exception to a reason category. The exception's text only chooses the category: it
    never reaches the detail (it can hold paths and header values)."""
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, ReasonError):
        return DecodeError(exc.reason, exc.detail)
    low = " ".join(str(exc).split()).lower()
    if isinstance(exc, MemoryError):
        return DecodeError(Reason.IMAGE_TOO_LARGE, "out of memory while decoding")
    if isinstance(exc, PermissionError):
        return DecodeError(Reason.PERMISSION_DENIED, "permission denied when opening the file to decode it")
    if isinstance(exc, FileNotFoundError):
        return DecodeError(Reason.IO_ERROR, "the file disappeared between the scan and the decoding")
    if isinstance(exc, NotImplementedError):
        return DecodeError(Reason.MISSING_DECODER, detail("pydicom has no decoder for {ts}", ts=uid_name(ts)))
    if "missing dependencies" in low:
        return _missing(ts, allowed, "no installed decoder")
    if "exceptions were raised by all available plugins" in low:
        # "plugin: message" lines: a missing decoder only if every installed plugin declined the variant
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        if lines and all("does not support" in ln.lower() or "not supported" in ln.lower() for ln in lines):
            return _missing(ts, allowed, "installed decoders cannot decode this variant")
    elif "does not support" in low or "not supported" in low:
        return _missing(ts, allowed, "installed decoders cannot decode this variant")
    if any(k in low for k in ("too short", "truncat", "not enough", "reshape", "insufficient", "expected length",
                              "no more", "end of file", "unexpected eof", "fewer frames", "frame index")):
        return DecodeError(Reason.TRUNCATED_PIXEL_DATA, "the pixel data end before the frames the header declares")
    if "exceptions were raised by all available plugins" in low or "decompression bomb" in low:
        return DecodeError(Reason.CORRUPT_CODESTREAM, "every installed decoder failed on the codestream")
    if isinstance(exc, (AttributeError, KeyError, TypeError)):
        return DecodeError(Reason.INVALID_FILE, "image attributes needed for decoding are missing or invalid")
    if isinstance(exc, OSError):
        return DecodeError(Reason.IO_ERROR, detail("the file could not be read ({e})", e=errno_name(exc)))
    return DecodeError(Reason.DECODE_ERROR, detail("the decoder failed ({kind})", kind=Term(_kind(exc))))


def _kind(exc: BaseException) -> str:
    """A coarse, fixed name of the exception's kind (never its text)."""
    for base in (ValueError, RuntimeError, IndexError, ArithmeticError, AssertionError):
        if isinstance(exc, base):
            return base.__name__
    return "other error"


def _plugins_to_try(ts: str, allowed: tuple[str, ...] | None) -> list[str]:
    """Decoder plugin names to pass to pydicom, ``[""]`` meaning "let pydicom try all installed ones"."""
    from pydicom.pixels import get_decoder

    try:
        dec = get_decoder(ts)
    except NotImplementedError:
        raise DecodeError(Reason.MISSING_DECODER, detail("pydicom has no decoder for {ts}", ts=uid_name(ts))) from None
    if dec.is_native or allowed is None:
        return [""]
    usable = [p for p in dec.available_plugins if p in allowed]
    if not usable:
        raise _missing(ts, allowed, "no installed decoder")
    return usable


def decode_frames(
    path: Path, transfer_syntax: str, frames: list[int], allowed: tuple[str, ...] | None = None, forced: bool = False,
    expected: tuple[int, int, int] | None = None, max_header_bytes: int = 32 << 20, max_header_elements: int = 200_000,
    max_side: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the given frames of one file, each mapped to float32 in [0, 1].

    Reads only what the frames need: pydicom reads the header up to Pixel Data and decodes the indexed frames. A
    deflated dataset is inflated as a stream, keeping only the requested frames. Encapsulated frames are checked
    against ``expected`` before any decoder runs (see :func:`check_codestreams`).

    Args:
        path: the file (opened read-only).
        transfer_syntax: its Transfer Syntax UID (inferred from the encoding for forced reads).
        frames: 0-based frame indices, ascending.
        allowed: decoder plugin allow-list (``None``: any installed plugin).
        forced: the file has no file meta; pass the transfer syntax explicitly.
        expected: ``(Rows, Columns, Samples per Pixel)`` of the header, for the codestream check (``None``: skip).
        max_header_bytes: inflated bytes kept before the pixel data of a deflated file.
        max_header_elements: elements allowed before the pixel data of a deflated file.
        max_side: reduce each frame by an integer factor so that its longer side is at most this (``None``: keep).

    Raises:
        DecodeError: with the reason category when the pixels cannot be decoded.
    """
    from pydicom.dataset import Dataset
    from pydicom.pixels import iter_pixels

    try:
        if expected is not None and transfer_syntax in CODESTREAM_SYNTAXES:
            check_codestreams(path, expected, forced)
        plugins = _plugins_to_try(transfer_syntax, allowed)
    except Exception as exc:
        raise _classify(exc, transfer_syntax, allowed) from None
    errors: list[DecodeError] = []
    for plugin in plugins:
        out: list[tuple[int, np.ndarray]] = []
        try:
            if transfer_syntax == DEFLATED:  # the pixel data sit inside the deflate stream
                out = _decode_deflated(path, frames, plugin, max_header_bytes, max_header_elements, max_side)
            else:
                hdr = Dataset()
                kwargs: dict[str, Any] = {"ds_out": hdr, "specific_tags": _FG_TAGS}
                if forced:
                    kwargs["transfer_syntax_uid"] = transfer_syntax
                pixels = iter_pixels(path, indices=frames, decoding_plugin=plugin, **kwargs)
                for frame, arr in zip(frames, pixels, strict=False):
                    out.append((frame, to_unit_range(arr, hdr, frame, max_side)))
                    del arr
            if len(out) < len(frames):
                raise DecodeError(Reason.TRUNCATED_PIXEL_DATA,
                                  detail("decoded {n} of {k} requested frames", n=len(out), k=len(frames)))
        except Exception as exc:  # every codec failure becomes a reason, never an escaping exception
            err = _classify(exc, transfer_syntax, allowed)
            retry = err.reason not in (Reason.MISSING_DECODER, Reason.IO_ERROR, Reason.PERMISSION_DENIED)
            out = _decode_whole(path, frames, plugin, forced, transfer_syntax, max_side) if retry else []
            if not out:
                errors.append(err)
                continue
        yield from out
        return
    raise errors[0] if len(errors) == 1 else _merge(errors)


def _decode_deflated(path: Path, frames: list[int], plugin: str, max_bytes: int, max_elements: int,
                     max_side: int | None) -> list[tuple[int, np.ndarray]]:
    """Inflate a deflated file as a stream and decode the requested frames; memory holds the header (at most
    ``max_bytes``) and those frames, whatever the stream inflates to."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import iter_pixels
    from pydicom.uid import ExplicitVRLittleEndian

    with open(path, "rb") as fh:
        header = read_header(fh, max_bytes=max_bytes, max_elements=max_elements)
        if not header.has_pixels or header.reader is None:
            raise DecodeError(Reason.NO_PIXEL_DATA, "no Pixel Data element in the deflated dataset")
        ds = header.dataset
        count = int(ds.get("NumberOfFrames", 1) or 1)
        per_frame = native_frame_bytes(int(ds.BitsAllocated), int(ds.Rows), int(ds.Columns),
                                       int(ds.get("SamplesPerPixel", 1) or 1),
                                       str(ds.get("PhotometricInterpretation", "") or ""))
        if count < max(frames) + 1:
            raise DecodeError(Reason.TRUNCATED_PIXEL_DATA, "a requested frame is beyond Number of Frames")
        reader = header.reader
        reader.stream()
        if per_frame == int(per_frame):  # byte-aligned frames: keep only the requested ones
            size, pos, chunks = int(per_frame), 0, []
            for frame in frames:
                reader.skip(frame * size - pos)
                chunk = reader.read(size)
                if len(chunk) < size:
                    raise DecodeError(Reason.TRUNCATED_PIXEL_DATA, "the deflated pixel data end early")
                chunks.append(chunk)
                pos = (frame + 1) * size
            data, kept, indices = b"".join(chunks), len(frames), list(range(len(frames)))
        else:  # 1-bit frames that do not end on a byte: keep the frames up to the last one requested
            kept = max(frames) + 1
            need = -(-kept * int(per_frame * 8) // 8)
            data, indices = reader.read(need), list(frames)
            if len(data) < need:
                raise DecodeError(Reason.TRUNCATED_PIXEL_DATA, "the deflated pixel data end early")
    flat = Dataset()
    # Raw elements, unconverted (``get_item`` would load a deferred value: from the deflated file, i.e. garbage);
    # deferred ones (value None) are left out.
    for tag, elem in ds._dict.items():
        if tag >> 16 != 0x7FE0 and not (getattr(elem, "value", 0) is None and getattr(elem, "length", 0)):
            flat[tag] = elem
    flat.file_meta = FileMetaDataset()
    flat.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "NumberOfFrames" in ds or kept > 1:
        flat.NumberOfFrames = kept
    bits = int(ds.BitsAllocated)
    flat.add_new(0x7FE00010, "OW" if bits > 8 else "OB", data)
    del data
    arrays = iter_pixels(flat, indices=indices, decoding_plugin=plugin)
    return [(frame, to_unit_range(arr, flat, frame, max_side)) for frame, arr in zip(frames, arrays, strict=False)]


def _decode_whole(path: Path, frames: list[int], plugin: str, forced: bool, ts: str,
                  max_side: int | None) -> list[tuple[int, np.ndarray]]:
    """Second try on a full read: pydicom's dataset path tolerates some encodings the streaming path rejects
    (e.g. encapsulated pixel data stored with a defined length). Bounded by the file size, by the header size
    checks of the scan and by the codestream check; values over ``DEFER_BYTES`` other than the pixel data are not
    loaded. Never for deflated files (pydicom would inflate them whole)."""
    import pydicom
    from pydicom.pixels import iter_pixels

    if ts == DEFLATED:
        return []
    try:
        if path.stat().st_size > _WHOLE_READ_LIMIT:
            return []
        ds = pydicom.dcmread(path, force=forced, defer_size=DEFER_BYTES)
        if forced and "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = ts
        arrs = list(iter_pixels(ds, indices=frames, decoding_plugin=plugin))
        if len(arrs) < len(frames):
            return []
        return [(f, to_unit_range(a, ds, f, max_side)) for f, a in zip(frames, arrs, strict=True)]
    except Exception:
        return []


def _merge(errors: list[DecodeError]) -> DecodeError:
    for reason in (Reason.MISSING_DECODER, Reason.TRUNCATED_PIXEL_DATA):
        if any(e.reason is reason for e in errors):
            return next(e for e in errors if e.reason is reason)
    return errors[0]


def _flatten(hdr: Any, frame: int) -> Any:
    """Copy the Modality/VOI attributes of one frame of an Enhanced object to the top level."""
    from pydicom.dataset import Dataset

    shared = hdr.get("SharedFunctionalGroupsSequence", None)
    per_frame = hdr.get("PerFrameFunctionalGroupsSequence", None)
    if not shared and not per_frame:
        return hdr
    flat = Dataset()
    flat.update(hdr)
    groups = []
    if shared:
        groups.append(shared[0])
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    for group in groups:  # per-frame values override shared ones
        for seq_name in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            seq = group.get(seq_name, None)
            if seq:
                for elem in seq[0]:
                    flat[elem.tag] = elem
    return flat


def _first(value: Any) -> float:
    if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def _window(x: np.ndarray, ds: Any) -> np.ndarray | None:
    """Linear / linear-exact / sigmoid windowing straight to [0, 1]; ``None`` if the window is absent or invalid."""
    try:
        center = _first(ds.WindowCenter)
        width = _first(ds.WindowWidth)
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if func == "SIGMOID":
        if width <= 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if func == "LINEAR_EXACT":
        if width <= 0:
            return None
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        return None
    return np.clip((x - (center - 0.5)) / (width - 1 if width > 1 else 1.0) + 0.5, 0.0, 1.0)


def _minmax(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, 0.0)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float64)
    return (x - lo) / (hi - lo)


def reduce_frame(arr: np.ndarray, max_side: int | None, palette: bool = False) -> np.ndarray:
    """Reduce a decoded frame by the smallest integer factor k that brings its longer side to ``max_side`` or less.

    Block means of k x k pixels, rounded back to the stored type so that LUTs still apply; palette indices are
    subsampled instead (a mean of indices means nothing). The encoder resizes to a few hundred pixels anyway; this
    bounds the float working set of a frame and the memory of the views waiting for a gate batch.

    Args:
        arr: one decoded frame, (H, W) or (H, W, C).
        max_side: the longest side allowed (``None`` or ``0``: no reduction).
        palette: the frame holds palette indices.
    """
    if not max_side or arr.ndim < 2:
        return arr
    h, w = arr.shape[:2]
    k = -(-max(h, w) // max_side)
    if k <= 1:
        return arr
    if palette:
        return np.ascontiguousarray(arr[::k, ::k])
    hh, ww = h // k * k, w // k * k
    blocks = arr[:hh, :ww].reshape(hh // k, k, ww // k, k, *arr.shape[2:])
    mean = blocks.mean(axis=(1, 3))  # a buffered reduction: no full-size float copy
    return np.rint(mean).astype(arr.dtype) if arr.dtype.kind in "iub" else mean.astype(arr.dtype)


def to_unit_range(arr: np.ndarray, hdr: Any, frame: int = 0, max_side: int | None = None) -> np.ndarray:
    """Map one decoded frame to float32 in [0, 1], (H, W) for monochrome or (H, W, 3) for colour.

    Monochrome: modality LUT (rescale or LUT), then VOI LUT or window (first one), else min-max; MONOCHROME1 is
    inverted. Palette colour goes through its LUT; YBR has already been converted to RGB by pydicom; colour is
    scaled by its bit depth.

    Args:
        arr: one decoded frame from pydicom.
        hdr: the dataset holding the Image Pixel, Modality LUT and VOI LUT attributes.
        frame: the frame index (for per-frame functional groups).
        max_side: first reduce the frame so that its longer side is at most this (see :func:`reduce_frame`).
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

    photometric = str(hdr.get("PhotometricInterpretation", "") or "").upper().strip()
    arr = reduce_frame(arr, max_side, palette=photometric == "PALETTE COLOR")
    if arr.dtype.kind == "f":  # Float / Double Float Pixel Data: no LUTs apply
        out = _minmax(arr.astype(np.float64))
    elif photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, hdr)
        scale = 255.0 if rgb.dtype == np.uint8 or float(rgb.max()) <= 255 else 65535.0
        out = rgb.astype(np.float64) / scale
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        bits = int(hdr.get("BitsStored", 0) or hdr.get("BitsAllocated", 8) or 8)
        scale = float(2**bits - 1) if bits <= 32 else float(arr.max() or 1)
        out = arr[..., :3].astype(np.float64) / scale
        if float(out.max()) > 1.0:  # BitsStored lied: fall back to the data range
            out = _minmax(arr[..., :3].astype(np.float64))
    elif arr.ndim == 2:
        ds = _flatten(hdr, frame)
        x = apply_modality_lut(arr, ds).astype(np.float64, copy=False)
        out = None
        voi = ds.get("VOILUTSequence", None)
        if voi and voi[0].get("LUTDescriptor") and voi[0].get("LUTData") is not None:
            try:
                y = apply_voi(np.rint(x).astype(np.int64), ds)
                out = np.clip(y.astype(np.float64) / float(2 ** int(voi[0].LUTDescriptor[2]) - 1), 0.0, 1.0)
            except Exception:  # malformed VOI LUT: fall back to the window
                out = None
        if out is None:
            out = _window(x, ds)
        if out is None:
            out = _minmax(x)
        if photometric == "MONOCHROME1":
            out = 1.0 - out
    else:
        raise DecodeError(Reason.UNSUPPORTED_IMAGE, detail(
            "unsupported pixel layout: {d} dimensions, {c} values in the last one, {p}",
            d=arr.ndim, c=int(arr.shape[-1]) if arr.ndim else 0, p=photometric_term(photometric)))
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
