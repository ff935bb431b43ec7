#!/usr/bin/env python3
"""Compare DICOM data sets, ignoring the file meta group (0002,xxxx).

    compare_dicom.py A B [A2 B2 ...]

Each pair (A, B) is compared element by element, recursing into sequences.
Exits 0 when every pair is equal; otherwise prints one line per difference
(at most 10 per pair) to stderr and exits 1. Run with the venv python made by
scripts/install-deps.sh.

Not compared: the file meta group (0002,xxxx), group length elements
(gggg,0000), which encoders recompute or drop, and Data Set Trailing Padding
(FFFC,FFFC), which has no meaning (DCMTK drops both when it sends).

Encoding differences that do not change the data set are not differences:
transfer syntax (values are compared decoded, so implicit vs explicit VR or
big vs little endian compare equal as long as the values agree; OW, OF, OL,
OD and OV values are compared word by word across byte orders; a private
element read from Implicit VR has no VR to compare), sequence and
item length encoding (defined vs undefined), and the single padding byte an
encoder adds to an odd-length OB/OW/UN value. Encapsulated pixel data is
compared byte for byte (fragments included), so a lossy re-compression is a
difference.
"""

from __future__ import annotations

import sys
import warnings

import pydicom
from pydicom.dataset import Dataset

MAX_REPORTS = 10
BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"}


def bytes_equal(a: bytes, b: bytes) -> bool:
    if a == b:
        return True
    # one side padded an odd-length value to even length
    if abs(len(a) - len(b)) == 1:
        short, long_ = (a, b) if len(a) < len(b) else (b, a)
        return long_[:-1] == short and long_[-1:] in (b"\x00", b" ")
    return False


WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def swapped(v: bytes, word: int) -> bytes:
    n = len(v) - len(v) % word
    return b"".join(v[i : i + word][::-1] for i in range(0, n, word)) + v[n:]


def compare(
    a: Dataset,
    b: Dataset,
    path: str,
    out: list[str],
    enc: tuple = ((True, True), (True, True)),
) -> None:
    """`enc`: (explicit VR, little endian) of a and of b."""
    tags = sorted(set(a.keys()) | set(b.keys()))
    for tag in tags:
        # file meta; group lengths (retired, recomputed or dropped by encoders);
        # Data Set Trailing Padding (no meaning, DCMTK drops it when sending)
        if tag.group == 0x0002 or tag.element == 0x0000 or tag == 0xFFFCFFFC:
            continue
        name = f"{path}({tag.group:04X},{tag.element:04X})"
        if tag not in a:
            out.append(f"{name} only in second")
            continue
        if tag not in b:
            out.append(f"{name} only in first")
            continue
        ea, eb = a[tag], b[tag]
        if ea.VR == "SQ" or eb.VR == "SQ":
            if ea.VR != eb.VR:
                out.append(f"{name} VR {ea.VR} != {eb.VR}")
                continue
            if len(ea.value) != len(eb.value):
                out.append(f"{name} {len(ea.value)} items != {len(eb.value)} items")
                continue
            for i, (ia, ib) in enumerate(zip(ea.value, eb.value)):
                compare(ia, ib, f"{name}[{i}].", out, enc)
            continue
        va, vb = ea.value, eb.value
        if isinstance(va, (bytes, bytearray)) and isinstance(vb, (bytes, bytearray)):
            va, vb = bytes(va), bytes(vb)
            word = WORD.get(ea.VR) or WORD.get(eb.VR)
            if word and enc[0][1] != enc[1][1]:
                va = swapped(va, word)
            if not bytes_equal(va, vb):
                out.append(f"{name} {len(va)} bytes != {len(vb)} bytes (content differs)")
            continue
        implicit = not (enc[0][0] and enc[1][0])
        if implicit and tag.is_private and ea.VR != eb.VR:
            continue
        if ea.VR != eb.VR and not (ea.VR in BINARY_VRS and eb.VR in BINARY_VRS):
            out.append(f"{name} VR {ea.VR} != {eb.VR}")
            continue
        if va != vb:
            out.append(f"{name} {ea.VR} {str(va)[:60]!r} != {str(vb)[:60]!r}")


def read(path: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        # decode everything now so that lazy parsing errors surface here
        for _ in ds.iterall():
            pass
        return ds


def encoding(ds: Dataset) -> tuple[bool, bool]:
    ts = ds.file_meta.TransferSyntaxUID if "TransferSyntaxUID" in ds.file_meta else None
    if ts is None:
        return (True, True)
    return (not ts.is_implicit_VR, ts.is_little_endian)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for a_path, b_path in zip(argv[0::2], argv[1::2]):
        try:
            a, b = read(a_path), read(b_path)
        except Exception as e:  # unreadable file: a difference, say why
            print(f"{a_path} vs {b_path}: cannot read: {e}", file=sys.stderr)
            failed += 1
            continue
        diffs: list[str] = []
        compare(a, b, "", diffs, (encoding(a), encoding(b)))
        if diffs:
            failed += 1
            print(f"{a_path} vs {b_path}: {len(diffs)} differences", file=sys.stderr)
            for d in diffs[:MAX_REPORTS]:
                print(f"  {d}", file=sys.stderr)
    if failed:
        print(f"compare_dicom: {failed} of {len(argv) // 2} pairs differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
