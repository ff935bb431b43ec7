#!/usr/bin/env python3
"""Bounded memory of a large C-MOVE (direction A): one study of about GB
gigabytes (the CT instances of CT_DIR, copied under new UIDs until the size
is reached) is loaded into Orthanc and moved through Pons (C-MOVE -> QIDO-RS
+ WADO-RS -> C-STORE) into a DCMTK storescp. Prints seconds, MB/s, Pons's
peak RSS (target < 100 MB) and checks that every instance arrived.
bench/run.sh runs it when BIG=1 (it needs about 3 x GB of free disk).

    qr_big.py PONS_BINARY CT_DIR [--gb 2]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pydicom

from ingest import ENV, Pons, free_port, wait_port
from qr import Orthanc, count_files, run_tool

UID_ROOT = "1.2.826.0.1.3680043.8.498.7735."  # pydicom's root + a bench arc


def make_big_study(files, out, target_bytes):
    """Copies of `files` with fresh UIDs, in one study, until target_bytes."""
    os.makedirs(out)
    total, n = 0, 0
    while total < target_bytes:
        ds = pydicom.dcmread(files[n % len(files)])
        series = n // 500
        ds.StudyInstanceUID = UID_ROOT + "1"
        ds.SeriesInstanceUID = f"{UID_ROOT}1.{series}"
        ds.SOPInstanceUID = f"{UID_ROOT}1.{series}.{n}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = "BENCHBIG"
        path = os.path.join(out, f"big{n:06d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        total += os.path.getsize(path)
        n += 1
    return n, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("ct_dir")
    ap.add_argument("--gb", type=float, default=2)
    args = ap.parse_args()
    files = sorted(os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir)
                   if f.endswith(".dcm"))
    with tempfile.TemporaryDirectory(prefix="pons-big-",
                                     dir=os.environ.get("PONS_BENCH_TMP")) as root:
        n, size = make_big_study(files, os.path.join(root, "big"), args.gb * 1e9)
        print(f"qr_big: {n} instances, {size / 1e9:.2f} GB", file=sys.stderr)
        scp_port = free_port()
        scp_dir = os.path.join(root, "storescp")
        os.makedirs(scp_dir)
        scp = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "-od", scp_dir,
                                str(scp_port)], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
        wait_port(scp_port)
        orthanc = Orthanc(root, {"STORESCP": ["STORESCP", "127.0.0.1", scp_port],
                                 "BENCH": ["BENCH", "127.0.0.1", free_port()]})
        pons = None
        try:
            t_load, _ = run_tool(["storescu", "-aet", "BENCH", "-aec", "ORTHANC", "+sd",
                                  "127.0.0.1", str(orthanc.dicom), os.path.join(root, "big")],
                                 "storescu into Orthanc")
            print(f"qr_big: loaded into Orthanc in {t_load:.1f} s", file=sys.stderr)
            ae = f'[[ae]]\ntitle = "STORESCP"\nhost = "127.0.0.1"\nport = {scp_port}\n'
            pons = Pons(args.binary, root, f"http://127.0.0.1:{orthanc.http}/dicom-web",
                        "pons-big", extra=ae)
            t0 = time.perf_counter()
            run_tool(["movescu", "-S", "-aet", "BENCH", "-aec", "PONS", "-aem", "STORESCP",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={UID_ROOT}1",
                      "127.0.0.1", str(pons.dimse)], "movescu through Pons")
            seconds = time.perf_counter() - t0
            rss = pons.stop()
            pons = None
            got, _ = count_files(scp_dir)
            if got != n:
                raise SystemExit(f"storescp received {got} of {n} instances")
        finally:
            if pons:
                pons.stop()
            orthanc.stop()
            scp.terminate()
            scp.wait()
    print(f"\nC-MOVE of one {size / 1e9:.2f} GB study ({n} instances) through Pons\n")
    print("| seconds | instances/s | MB/s | Pons peak RSS | target |")
    print("|---|---|---|---|---|")
    verdict = "met" if rss < 100 else "MISSED"
    print(f"| {seconds:.1f} | {n / seconds:.0f} | {size / 1e6 / seconds:.0f} | "
          f"{rss:.0f} MB | < 100 MB: {verdict} |")


if __name__ == "__main__":
    main()
