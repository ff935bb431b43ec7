#!/usr/bin/env python3
"""STOW-RS benchmark (direction B): N CT-like instances (~0.5 MB each)

  through Pons  (one STOW-RS request, streamed -> Pons -> C-STORE to the PACS)
  versus direct (DCMTK storescu, one association, straight at the PACS)

with two PACS: Orthanc (a real archive; its ingest caps both paths) and a
DCMTK storescp --ignore (reads every byte, stores nothing: shows Pons's own
cost). The STOW-RS client streams the files from disk as a chunked
multipart/related body (http.client), so the client is not what is measured.
Each path runs REPS times against a fresh PACS, alternating; the median run
is reported, with Pons's peak RSS (VmHWM) over all its runs.

    stow.py PONS_BINARY CT_DIR [--n 1000] [--reps 3]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from ingest import ENV, Pons, free_port, run_storescu, wait_port
from qr import Orthanc

TARGET = 0.8  # STOW-RS through Pons: at least 0.8x storescu's throughput
# A developer's RUST_BACKTRACE=1 makes dicom-rs capture a backtrace on every
# expected end-of-data while decoding a command set: not what users run.
ENV.pop("RUST_BACKTRACE", None)
CHUNK = 1 << 20


def stow(port, files):
    """POST every file in one multipart/related request; (seconds, status, body)."""
    boundary = f"bench-{uuid.uuid4().hex}"

    def body():
        for path in files:
            yield (f"--{boundary}\r\nContent-Type: application/dicom\r\n"
                   f"Content-Length: {os.path.getsize(path)}\r\n\r\n").encode()
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/dicom-web/studies", body=body(), encode_chunked=True,
                 headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
    rsp = conn.getresponse()
    data = rsp.read()
    t = time.perf_counter() - start
    conn.close()
    return t, rsp.status, data


class StoreScp:
    """DCMTK storescp that reads every data set and stores nothing."""

    def __init__(self, root):
        self.port = free_port()
        self.log = open(os.path.join(root, "storescp.log"), "w")
        self.proc = subprocess.Popen(["storescp", "--ignore", "-aet", "SINK", str(self.port)],
                                     env=ENV, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        self.aet = "SINK"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def pacs_toml(root, aet, port):
    return (f'[cache]\ndir = "{root}/cache"\n\n'
            f'[[pacs]]\nname = "pacs"\nae_title = "{aet}"\nhost = "127.0.0.1"\nport = {port}\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("ct_dir")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    files = sorted(os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir)
                   if f.endswith(".dcm"))[:args.n]
    n = len(files)
    mb = sum(os.path.getsize(f) for f in files) / 1e6

    rows = []
    for pacs_name in ("Orthanc", "storescp --ignore"):
        runs = {"direct": [], "pons": []}
        rss = 0.0
        for rep in range(args.reps):
            for path in ("direct", "pons"):
                with tempfile.TemporaryDirectory(prefix="pons-stow-",
                                                 dir=os.environ.get("PONS_BENCH_TMP")) as root:
                    if pacs_name == "Orthanc":
                        pacs = Orthanc(root, {})
                        aet, port = "ORTHANC", pacs.dicom
                    else:
                        pacs = StoreScp(root)
                        aet, port = pacs.aet, pacs.port
                    try:
                        if path == "direct":
                            t = run_storescu(port, aet, [files], root)
                        else:
                            pons = Pons(args.binary, root, "http://127.0.0.1:9/dicom-web",
                                        "pons", extra=pacs_toml(root, aet, port))
                            wait_port(pons.web)
                            t, status, body = stow(pons.web, files)
                            rss = max(rss, pons.stop())
                            if status != 200:
                                raise SystemExit(f"STOW-RS answered {status}: {body[:2000]!r}")
                            stored = len(json.loads(body)["00081199"]["Value"])
                            if stored != n:
                                raise SystemExit(f"STOW-RS stored {stored} of {n}")
                        if pacs_name == "Orthanc" and pacs.count() != n:
                            raise SystemExit(f"{path}: Orthanc holds {pacs.count()} of {n}")
                    finally:
                        pacs.stop()
                runs[path].append(t)
                print(f"stow: {pacs_name} {path} run {rep + 1}: {t:.2f} s", file=sys.stderr)
        rows.append((pacs_name, statistics.median(runs["direct"]),
                     statistics.median(runs["pons"]), rss))

    print(f"\nSTOW-RS of {n} instances, {mb:.0f} MB, median of {args.reps} runs\n")
    head = ("PACS", "path", "seconds", "inst/s", "MB/s", "Pons peak RSS", "vs storescu")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for pacs_name, t_direct, t_pons, rss in rows:
        print(f"| {pacs_name} | storescu (direct) | {t_direct:.2f} | {n / t_direct:.0f} | "
              f"{mb / t_direct:.0f} | - | 1.00 |")
        ratio = t_direct / t_pons
        mark = "ok" if ratio >= TARGET else "BELOW TARGET"
        print(f"| {pacs_name} | STOW-RS via Pons | {t_pons:.2f} | {n / t_pons:.0f} | "
              f"{mb / t_pons:.0f} | {rss:.0f} MB | {ratio:.2f} ({mark}) |")
    print(f"\n'vs storescu' is storescu's time over Pons's: target >= {TARGET} "
          "(throughput), Pons peak RSS < 150 MB.")


if __name__ == "__main__":
    main()
