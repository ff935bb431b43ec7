#!/usr/bin/env python3
"""Write the Pons test data set. Run with the venv python made by install-deps.sh.

    make_testdata.py [--out DIR] [--ct N ...] [--no-samples]

Writes into DIR (default: ${PONS_CACHE:-$HOME/.cache/pons}/testdata):

  samples/       real sample files shipped inside pydicom, chosen to cover the
                 transfer syntaxes a gateway meets (implicit/explicit VR LE,
                 explicit VR BE, deflated, JPEG baseline/extended/lossless,
                 JPEG 2000, JPEG-LS, RLE) and multiframe objects. Only complete
                 PS3.10 files with a file meta header and the identifying
                 attributes Orthanc insists on, that DCMTK reads cleanly; each
                 SOP Instance UID once. Where every file of a needed transfer
                 syntax repeats a UID already taken, one copy gets a new UID
                 (named *_newuid.dcm; only the UID elements differ).
  samples/manifest.tsv
                 file, transfer syntax UID, SOP class UID, SOP instance UID
  ct/N/          N synthetic CT instances (512x512, 16 bit, explicit VR LE,
                 ~0.5 MB each) in series of up to 100 slices, up to 4 series a
                 study. UIDs are deterministic: reruns write identical files.
  ct/N/manifest.tsv
                 same columns as samples/manifest.tsv

Each part is written once (a .stamp file marks it complete) under an exclusive
lock on DIR/.lock, so concurrent callers (parallel tests) do not race.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

# Bump when the selection or the generator changes: stale data is rebuilt.
VERSION = "2"

# Deterministic UIDs: pydicom's root plus a hash of these entropy sources.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

TS_NAMES = {
    "1.2.840.10008.1.2": "implicit VR little endian",
    "1.2.840.10008.1.2.1": "explicit VR little endian",
    "1.2.840.10008.1.2.2": "explicit VR big endian",
    "1.2.840.10008.1.2.1.99": "deflated explicit VR little endian",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE lossless",
}

# Transfer syntaxes the sample set must cover; the build fails otherwise.
REQUIRED_TS = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
]

# Files considered first, in this order, when a transfer syntax is to be
# covered (they are good representatives: multiframe, colour, real CT/MR).
PREFERRED = [
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated
    "JPGExtended.dcm",  # JPEG extended (process 2 & 4)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless (same UID as MR_small)
    "examples_jpeg2k.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "SC_rgb_rle_2frame.dcm",  # RLE, multiframe
    "examples_ybr_color.dcm",  # JPEG baseline, 30 frames
    "rtdose.dcm",  # implicit VR LE, 15 frames
    "CT_small.dcm",  # explicit VR LE
]

# Files that are deliberately broken in pydicom's test set.
EXCLUDE = {
    "MR_truncated.dcm",
    "rtplan_truncated.dcm",
    "badVR.dcm",
    "J2K_pixelrep_mismatch.dcm",
}

REQUIRED_ATTRS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)


def pydicom_test_files() -> list[Path]:
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    by_name = {p.name: p for p in files}
    ordered = [by_name[n] for n in PREFERRED if n in by_name]
    ordered += [p for p in files if p not in ordered]
    return ordered


def check_sample(path: Path) -> tuple[str, str, str] | None:
    """(transfer syntax, SOP class, SOP instance) of a usable sample, else None."""
    if path.name in EXCLUDE or path.name.upper().startswith("DICOMDIR"):
        return None
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # known-broken files are in EXCLUDE
            ds = pydicom.dcmread(path, force=False)
            ts = str(ds.file_meta.TransferSyntaxUID)
            _ = ds.file_meta.MediaStorageSOPClassUID
            for kw in REQUIRED_ATTRS:
                if kw not in ds:
                    return None
                # Orthanc accepts an empty PatientID, not empty study/series UIDs
                if kw != "PatientID" and not str(ds[kw].value).strip():
                    return None
            # Decode every element once: catches truncated or malformed files.
            for _elem in ds.iterall():
                pass
    except Exception:
        return None
    if str(ds.SOPInstanceUID) != str(ds.file_meta.get("MediaStorageSOPInstanceUID", "")):
        return None
    if not dcmtk_reads(path, str(ds.SOPInstanceUID)):
        return None
    return ts, str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def dcmtk_reads(path: Path, sop_uid: str) -> bool:
    """DCMTK (storescu, Orthanc) parses the file without error and finds the
    SOP Instance UID as a UI element (rtdose_rle.dcm, for one, it misreads)."""
    if shutil.which("dcmdump") is None:
        return True  # install-deps.sh installs dcmtk; without it, trust pydicom
    out = subprocess.run(
        ["dcmdump", "+P", "0008,0018", str(path)],
        capture_output=True, text=True, errors="replace",
    )
    if out.returncode != 0:
        return False
    lines = (out.stdout + out.stderr).splitlines()
    if any(l.startswith(("E:", "F:")) for l in lines):
        return False
    return any(l.startswith("(0008,0018) UI [" + sop_uid + "]") for l in lines)


def write_manifest(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write("file\ttransfer_syntax_uid\tsop_class_uid\tsop_instance_uid\n")
        for row in rows:
            f.write("\t".join(row) + "\n")


def make_samples(out: Path) -> None:
    dest = out / "samples"
    stamp = dest / ".stamp"
    if stamp.exists() and stamp.read_text() == VERSION:
        return
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    # Several pydicom samples share one SOP Instance UID (the MR_small_* family
    # is one instance in many encodings), so pick the rarest transfer syntaxes
    # first, then everything else that is valid and new.
    candidates = []
    for path in pydicom_test_files():
        info = check_sample(path)
        if info is not None:
            candidates.append((path, *info))
    by_ts: dict[str, list] = {}
    for c in candidates:
        by_ts.setdefault(c[1], []).append(c)
    chosen: list = []
    seen_uids: set[str] = set()
    reuid: dict[Path, str] = {}  # path -> new SOP Instance UID
    for ts in sorted(REQUIRED_TS, key=lambda t: len(by_ts.get(t, []))):
        options = by_ts.get(ts, [])
        pick = next((c for c in options if c[3] not in seen_uids), None)
        if pick is None and options:
            # Every file in this syntax repeats a UID already taken (pydicom
            # ships RLE only as re-encodings of its JPEG lossless and JPEG-LS
            # samples): give the first one a new, deterministic UID.
            path, ts_, cls, old = options[0]
            new_uid = generate_uid(UID_PREFIX, entropy_srcs=["pons-sample", path.name, old])
            reuid[path] = new_uid
            pick = (path, ts_, cls, new_uid)
        if pick is not None:
            seen_uids.add(pick[3])
            chosen.append(pick)
    for c in candidates:
        if c[3] not in seen_uids:
            seen_uids.add(c[3])
            chosen.append(c)

    rows = []
    for path, ts, sop_class, sop_uid in chosen:
        name = path.name if path.suffix == ".dcm" else f"{path.parent.name}_{path.name}.dcm"
        if (dest / name).exists():
            name = f"{path.parent.name}_{name}"
        if path in reuid:
            name = name.removesuffix(".dcm") + "_newuid.dcm"
            ds = pydicom.dcmread(path)
            ds.SOPInstanceUID = sop_uid
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.save_as(dest / name, enforce_file_format=True)
        else:
            shutil.copyfile(path, dest / name)
        rows.append((name, ts, sop_class, sop_uid))

    covered = {r[1] for r in rows}
    missing = [f"{ts} ({TS_NAMES.get(ts, '?')})" for ts in REQUIRED_TS if ts not in covered]
    if missing:
        sys.exit(f"make_testdata: pydicom samples do not cover: {', '.join(missing)}")
    rows.sort()
    write_manifest(dest / "manifest.tsv", rows)
    stamp.write_text(VERSION)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    print(
        f"make_testdata: {len(rows)} samples in {dest} "
        f"({len(counts)} transfer syntaxes)"
    )


def ct_pixels(n_patterns: int = 8) -> list[bytes]:
    """A few cheap 512x512 uint16 CT-like images: a disc of 'tissue' with rings."""
    y, x = np.mgrid[-256:256, -256:256].astype(np.float32)
    r = np.sqrt(x * x + y * y)
    images = []
    for k in range(n_patterns):
        body = np.where(r < 200 - 4 * k, 1000.0 + 40.0 * np.sin(r / (6.0 + k)), 0.0)
        bone = np.where((r > 120 + k) & (r < 135 + k), 1800.0, 0.0)
        img = (body + bone + (x + 256) * 0.5).astype(np.uint16)
        images.append(img.tobytes())
    return images


def make_ct(out: Path, n: int) -> None:
    dest = out / "ct" / str(n)
    stamp = dest / ".stamp"
    if stamp.exists() and stamp.read_text() == VERSION:
        return
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    per_series = 100
    series_per_study = 4
    pixels = ct_pixels()

    def uid(*parts: object) -> str:
        return generate_uid(UID_PREFIX, entropy_srcs=["pons-ct", str(n), *map(str, parts)])

    rows = []
    for i in range(n):
        series_no = i // per_series
        study_no = series_no // series_per_study
        slice_no = i % per_series
        study_uid = uid("study", study_no)
        series_uid = uid("series", series_no)
        sop_uid = uid("instance", i)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "PONS_TESTDATA"

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = "20240102"
        ds.SeriesDate = "20240102"
        ds.StudyTime = "101500"
        ds.SeriesTime = f"{1016 + series_no % 40:04d}00"
        ds.AccessionNumber = f"PONS{n:05d}{study_no:03d}"
        ds.Modality = "CT"
        ds.Manufacturer = "Pons Test Data"
        ds.InstitutionName = "Pons General"
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StudyDescription = f"Synthetic CT {study_no + 1}"
        ds.SeriesDescription = f"Axial {series_no + 1}"
        ds.PatientName = f"Synthetic^Patient{n}^{study_no}"
        ds.PatientID = f"PONS-CT-{n}-{study_no}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.SliceThickness = "1.0"
        ds.KVP = "120"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = str(study_no + 1)
        ds.SeriesNumber = series_no + 1
        ds.InstanceNumber = slice_no + 1
        ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-slice_no * 1.0:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = uid("frame", study_no)
        ds.SliceLocation = f"{-slice_no * 1.0:.1f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 512
        ds.Columns = 512
        ds.PixelSpacing = ["0.9765625", "0.9765625"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = pixels[i % len(pixels)]

        name = f"ct{i:05d}.dcm"
        ds.save_as(dest / name, enforce_file_format=True)
        rows.append((name, ExplicitVRLittleEndian, CTImageStorage, sop_uid))

    write_manifest(dest / "manifest.tsv", rows)
    stamp.write_text(VERSION)
    print(f"make_testdata: {n} CT instances in {dest}")


def main() -> None:
    cache = Path(os.environ.get("PONS_CACHE") or Path.home() / ".cache" / "pons")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=cache / "testdata")
    ap.add_argument("--ct", type=int, action="append", default=[], metavar="N",
                    help="generate N synthetic CT instances into ct/N (repeatable)")
    ap.add_argument("--no-samples", action="store_true")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not args.no_samples:
            make_samples(args.out)
        for n in args.ct:
            if n <= 0:
                sys.exit("make_testdata: --ct N needs N > 0")
            make_ct(args.out, n)


if __name__ == "__main__":
    main()
