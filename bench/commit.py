#!/usr/bin/env python3
"""Storage commitment benchmark (direction A): a pynetdicom SCU
(scripts/commit_scu.py) asks for commitment of N instances; the time is from
sending N-ACTION to receiving the N-EVENT-REPORT.

  (a) through Pons, all N already in the archive: Pons verifies with QIDO-RS
      (Orthanc has no /commitment-requests; `auto` finds out), report on the
      same association;
  (b) the same, the SCU releases at once: report on a new association;
  (c) through Pons, N-ACTION right after storescu's last C-STORE-RSP: the
      time includes waiting for Pons's spool to reach the archive;
  (d) direct: N-ACTION to Orthanc's own storage commitment SCP (it always
      reports on a new association).
  (e) direction B: POST /commitment-requests to a Pons whose [[pacs]] is that
      Orthanc, then GET every 100 ms until 200: Pons sends N-ACTION, Orthanc
      reports to Pons on a new association;
  (f) the chain: the SCU -> Pons A (direction A, `auto` finds B's
      /commitment-requests and polls it as Retry-After says) -> Pons B -> Orthanc.

Every report and result is checked: exactly the N instances committed.
(a), (b), (d), (e), (f) are the median of ROUNDS runs. Run it through bench/run.sh, which
builds Pons in release mode; any build works:

    commit.py PONS_BINARY CT_DIR [--rounds 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import pydicom

from ingest import Pons, free_port, run_storescu, wait_until
from qr import Orthanc

HERE = os.path.dirname(os.path.abspath(__file__))
SCU = os.path.join(HERE, "..", "scripts", "commit_scu.py")


def commit(port, called, refs_file, txn, listen=None):
    """One commitment; its seconds, after checking the report."""
    cmd = [sys.executable, SCU, "request", "127.0.0.1", str(port), refs_file,
           "--txn", txn, "--called", called, "--wait", "600"]
    if listen:
        cmd += ["--release", "--listen", str(listen)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"commit_scu.py failed: {p.stderr[-2000:]}")
    out = json.loads(p.stdout)
    if out["status"] != 0 or not out["reports"]:
        raise SystemExit(f"no report from {called}: {p.stdout[:2000]}")
    return out


def check(out, refs, via):
    r = out["reports"][0]
    got = sorted(map(tuple, r["committed"]))
    if r["event_type"] != 1 or r["failed"] or got != sorted(map(tuple, refs)) or r["via"] != via:
        raise SystemExit(f"wrong report: event {r['event_type']}, {len(got)} committed, "
                         f"{len(r['failed'])} failed, via {r['via']}")
    return out["seconds"]


def commit_web(base, refs, txn):
    """(e): POST, then GET until 200; its seconds, after checking the result."""
    items = [{"00081150": {"vr": "UI", "Value": [c]}, "00081155": {"vr": "UI", "Value": [i]}}
             for c, i in refs]
    url = f"{base}/commitment-requests/{txn}"
    start = time.monotonic()
    req = urllib.request.Request(url, data=json.dumps({"00081199": {"vr": "SQ", "Value": items}})
                                 .encode(), headers={"Content-Type": "application/dicom+json"})
    with urllib.request.urlopen(req) as r:
        status, body = r.status, r.read()
    while status == 202:
        time.sleep(0.1)
        with urllib.request.urlopen(url) as r:
            status, body = r.status, r.read()
    seconds = time.monotonic() - start
    result = json.loads(body)
    got = sorted((i["00081150"]["Value"][0], i["00081155"]["Value"][0])
                 for i in result.get("00081199", {}).get("Value", []))
    if got != sorted(map(tuple, refs)) or "00081198" in result:
        raise SystemExit(f"wrong result: {len(got)} committed, body {str(body)[:300]}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("ct_dir")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    files = sorted(os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir)
                   if f.endswith(".dcm"))
    n = len(files)
    refs = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        refs.append([str(ds.SOPClassUID), str(ds.SOPInstanceUID)])

    with tempfile.TemporaryDirectory(prefix="pons-commit-",
                                     dir=os.environ.get("PONS_BENCH_TMP")) as root:
        refs_file = os.path.join(root, "refs.json")
        with open(refs_file, "w") as f:
            json.dump(refs, f)
        listen = free_port()
        b_dimse = free_port()
        orthanc = Orthanc(root, {"MODALITY": ["MODALITY", "127.0.0.1", listen],
                                 "PONSB": ["PONS", "127.0.0.1", b_dimse]})
        dicomweb = f"http://127.0.0.1:{orthanc.http}/dicom-web"
        ae = f'[[ae]]\ntitle = "MODALITY"\nhost = "127.0.0.1"\nport = {listen}\n'
        pons = Pons(args.binary, root, dicomweb, "pons", extra=ae)
        pacs = (f'[cache]\ndir = "{root}/cache-b"\n[[pacs]]\nname = "orthanc"\n'
                f'ae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {orthanc.dicom}\n')
        pons_b = Pons(args.binary, root, dicomweb, "pons-b", extra=pacs, dimse=b_dimse)
        base_b = f"http://127.0.0.1:{pons_b.web}/dicom-web"
        pons_a = Pons(args.binary, root, base_b, "pons-a", extra=ae)
        txn = iter(f"1.2.826.0.1.3680043.10.1055.77.{i}" for i in range(1, 1000))
        try:
            run_storescu(pons.dimse, "PONS", [files], root)
            t_c = check(commit(pons.dimse, "PONS", refs_file, next(txn)), refs, "same")
            wait_until(lambda: orthanc.count() >= n)
            t_a = [check(commit(pons.dimse, "PONS", refs_file, next(txn)), refs, "same")
                   for _ in range(args.rounds)]
            t_b = [check(commit(pons.dimse, "PONS", refs_file, next(txn), listen), refs, "new")
                   for _ in range(args.rounds)]
            t_d = [check(commit(orthanc.dicom, "ORTHANC", refs_file, next(txn), listen), refs,
                         "new") for _ in range(args.rounds)]
            t_e = [commit_web(base_b, refs, next(txn)) for _ in range(args.rounds)]
            t_f = [check(commit(pons_a.dimse, "PONS", refs_file, next(txn)), refs, "same")
                   for _ in range(args.rounds)]
        finally:
            for p in (pons, pons_a, pons_b):
                p.stop()
            orthanc.stop()

    print(f"\nStorage commitment of {n} instances, N-ACTION to N-EVENT-REPORT "
          f"(median of {args.rounds}; (c) once)\n")
    print("| path | seconds | instances/s |")
    print("|---|---|---|")
    for name, t in (
        ("(a) Pons, verify with QIDO-RS, same association", statistics.median(t_a)),
        ("(b) Pons, verify with QIDO-RS, new association", statistics.median(t_b)),
        ("(c) Pons, N-ACTION right after storing (spool drains first)", t_c),
        ("(d) Orthanc's own SCP over DIMSE (new association)", statistics.median(t_d)),
        ("(e) POST /commitment-requests to Pons -> N-ACTION to Orthanc", statistics.median(t_e)),
        ("(f) SCU -> Pons A -> Pons B -> Orthanc (the chain)", statistics.median(t_f)),
    ):
        print(f"| {name} | {t:.2f} | {n / t:.0f} |")


if __name__ == "__main__":
    main()
