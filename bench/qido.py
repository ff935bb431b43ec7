#!/usr/bin/env python3
"""QIDO-RS benchmark (direction B): a DICOMweb client's search through Pons

  through Pons   (HTTP QIDO-RS -> Pons -> C-FIND on Orthanc's DIMSE SCP)
  versus direct  (findscu -> Orthanc's C-FIND SCP)

against an Orthanc archive of STUDIES one-instance studies (8x8 pixels,
PatientID QR0000.., made as in bench/qr.py).

  /studies?PatientID=QR0500 (1 match) and /studies?PatientID=QR01* (100
  matches), QUERIES requests each per path, alternating; median and p95 wall
  time. Pons is timed two ways: one curl process per request (process start,
  connection, answer: the same work as one findscu run) and in-process with
  urllib (a new connection per request, no process start). Every answer is
  checked: the exact Study Instance UIDs, before and after the timed rounds.

Pons's peak RSS (VmHWM) is read at the end. Run it through bench/run.sh,
which installs the peers and builds Pons in release mode.

    qido.py PONS_BINARY [--studies 1000] [--queries 50]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from ingest import ENV, Pons, free_port
from qr import UID_ROOT, Orthanc, findscu, make_tiny_studies, pct, run_tool

TARGET = 1.5  # QIDO-RS through Pons: at most 1.5x the direct findscu latency


def expected_uids(pattern, studies):
    """Study UIDs of the tiny studies whose PatientID matches QR-pattern."""
    prefix = pattern.rstrip("*")
    return {f"{UID_ROOT}1.{i}" for i in range(studies)
            if (f"QR{i:04d}".startswith(prefix) if pattern.endswith("*")
                else f"QR{i:04d}" == pattern)}


def uids_of(body):
    return {m["0020000D"]["Value"][0] for m in json.loads(body)}


def qido_curl(url):
    start = time.perf_counter()
    p = subprocess.run(["curl", "-sS", "--fail", "-H", "Accept: application/dicom+json", url],
                       env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"curl {url}: {p.stderr.decode(errors='replace')}")
    return t, p.stdout


def qido_urllib(url):
    start = time.perf_counter()
    req = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(req) as r:
        body = r.read()
    return time.perf_counter() - start, body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="pons-qido-",
                                     dir=os.environ.get("PONS_BENCH_TMP")) as root:
        make_tiny_studies(os.path.join(root, "tiny"), args.studies)
        orthanc = Orthanc(root, {
            "BENCH": ["BENCH", "127.0.0.1", free_port()],  # findscu
            "PONS": ["PONS", "127.0.0.1", free_port()],  # Pons's C-FIND
        })
        pons = None
        try:
            t_load, _ = run_tool(["storescu", "-aet", "BENCH", "-aec", "ORTHANC", "+sd",
                                  "127.0.0.1", str(orthanc.dicom), os.path.join(root, "tiny")],
                                 "storescu into Orthanc")
            if orthanc.count() != args.studies:
                raise SystemExit(f"Orthanc holds {orthanc.count()} instances, "
                                 f"not {args.studies}")
            print(f"qido: archive loaded ({args.studies} studies) in {t_load:.1f} s",
                  file=sys.stderr)
            pacs = (f'[cache]\ndir = "{root}/cache"\n'
                    f'[[pacs]]\nname = "orthanc"\nae_title = "ORTHANC"\n'
                    f'host = "127.0.0.1"\nport = {orthanc.dicom}\n')
            pons = Pons(args.binary, root, f"http://127.0.0.1:{orthanc.http}/dicom-web",
                        "pons-qido", extra=pacs)
            base = f"http://127.0.0.1:{pons.web}/dicom-web/studies"

            rows = []
            for pid in (f"QR{args.studies // 2:04d}", "QR01*"):
                want = expected_uids(pid, args.studies)
                url = f"{base}?{urllib.parse.urlencode({'PatientID': pid}, safe='*')}"

                def check(body):
                    got = uids_of(body)
                    if got != want:
                        raise SystemExit(f"QIDO-RS PatientID={pid}: {len(got)} studies, "
                                         f"expected {len(want)} (or other UIDs)")

                times = {"direct": [], "curl": [], "urllib": []}
                # Rounds 0 and last: not timed; they check every path's answer.
                for i in range(args.queries + 2):
                    timed = 0 < i <= args.queries
                    t = findscu("ORTHANC", orthanc.dicom, f"PatientID={pid}",
                                None if timed else len(want))
                    t_c, body_c = qido_curl(url)
                    t_u, body_u = qido_urllib(url)
                    if timed:
                        times["direct"].append(t)
                        times["curl"].append(t_c)
                        times["urllib"].append(t_u)
                    else:
                        check(body_c)
                        check(body_u)
                rows.append((pid, len(want), times))
            rss = pons.stop()
            pons = None
        finally:
            if pons:
                pons.stop()
            orthanc.stop()

    print(f"\nQIDO-RS /studies through Pons (C-FIND on Orthanc) versus findscu straight at "
          f"Orthanc, {args.studies} studies, {args.queries} requests per query and path\n")
    head = ("query", "matches", "findscu median ms", "findscu p95 ms",
            "Pons (curl) median ms", "Pons (curl) p95 ms", "Pons/direct (median)",
            "Pons/direct (p95)", "target", "Pons (urllib) median ms", "Pons (urllib) p95 ms",
            "Pons peak RSS")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for pid, n, t in rows:
        d_med, d95 = statistics.median(t["direct"]), pct(t["direct"], 95)
        c_med, c95 = statistics.median(t["curl"]), pct(t["curl"], 95)
        u_med, u95 = statistics.median(t["urllib"]), pct(t["urllib"], 95)
        ratio = c_med / d_med
        verdict = "met" if ratio <= TARGET else "MISSED"
        print(f"| `PatientID={pid}` | {n} | {d_med * 1e3:.1f} | {d95 * 1e3:.1f} | "
              f"{c_med * 1e3:.1f} | {c95 * 1e3:.1f} | {ratio:.2f}x | {c95 / d95:.2f}x | "
              f"<= {TARGET}x: {verdict} | {u_med * 1e3:.1f} | {u95 * 1e3:.1f} | {rss:.0f} MB |")
    print("\nfindscu and curl are timed from process start to exit (one association or"
          " connection each); urllib is the same request from inside the benchmark.")


if __name__ == "__main__":
    main()
