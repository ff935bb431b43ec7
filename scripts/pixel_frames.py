#!/usr/bin/env python3
"""Print what pydicom finds as each frame of DICOM files, one JSON line a file.

    pixel_frames.py [--decode] FILE [FILE ...]

For each file: {"path", "transfer_syntax", "rows", "columns", "frames"}, with
each frame's bytes in hex, as stored:
  - native pixel data: the frame's samples in little endian (pixel_array, so
    independent of how the file lays them out; planar configuration kept;
    Bits Allocated 1 packed LSB first from the frame's first pixel);
  - encapsulated pixel data: the frame's compressed bytes (pydicom's
    generate_frames, with the Extended Offset Table when there is one).
With --decode, encapsulated frames are decoded instead (pixel_array, YBR
converted to RGB), as native ones are.
Files without pixel data give "frames": []. A file pydicom cannot decode gives
"error". Run with the venv python made by scripts/install-deps.sh.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pydicom
from pydicom.encaps import generate_frames


def digest(b: bytes) -> str:
    return b.hex()


def native_frames(ds) -> list[bytes]:
    arr = ds.pixel_array
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    if nf == 1:
        arr = arr[np.newaxis]
    out = []
    for frame in arr:
        if spp > 1 and int(ds.get("PlanarConfiguration", 0)) == 1:
            frame = np.moveaxis(frame, -1, 0)
        if int(ds.BitsAllocated) == 1:
            out.append(np.packbits(frame.ravel().astype(np.uint8), bitorder="little").tobytes())
        else:
            out.append(frame.astype(frame.dtype.newbyteorder("<")).tobytes())
    return out


def main() -> int:
    decode = "--decode" in sys.argv[1:]
    warnings.simplefilter("ignore")
    for path in (a for a in sys.argv[1:] if a != "--decode"):
        ds = pydicom.dcmread(path)
        ts = ds.file_meta.TransferSyntaxUID
        line = {"path": path, "transfer_syntax": str(ts), "frames": []}
        if "PixelData" in ds:
            line["rows"] = int(ds.Rows)
            line["columns"] = int(ds.Columns)
            try:
                if ts.is_encapsulated and not decode:
                    nf = int(ds.get("NumberOfFrames", 1) or 1)
                    eot = None
                    if "ExtendedOffsetTable" in ds:
                        eot = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
                    frames = generate_frames(
                        ds.PixelData, number_of_frames=nf, extended_offsets=eot
                    )
                    line["frames"] = [digest(f) for f in frames]
                else:
                    line["frames"] = [digest(f) for f in native_frames(ds)]
            except Exception as e:  # noqa: BLE001 - reported to the test
                line["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
