#!/usr/bin/env python3
"""Worklist benchmark: a modality asks for the 50 scheduled steps of its
station (60 in the worklist: 50 CT for station CT1, 10 MR)

  direct          findscu -W -> Orthanc's worklist plugin (MWL C-FIND)
  through Pons A  findscu -W -> Pons, the modality's MWL SCP (direction A)
                  -> GET /modality-scheduled-procedure-steps on a DICOMweb
                  worklist, here Pons's own face (direction B) -> MWL C-FIND
                  -> Orthanc: the query is translated twice
  through Pons B  GET /modality-scheduled-procedure-steps on one kept-alive
                  HTTP connection -> Pons -> MWL C-FIND -> Orthanc

QUERIES rounds of each, alternating; median and p95 wall time, and the
ratio to the direct path (target: at most 1.5x). Every path's answer is
checked first: exactly the 50 CT1 accession numbers.

Then under load: CLIENTS HTTP clients at once, each sending ROUNDS worklist
searches on its own kept-alive connection (each client its own time window,
so no two share a C-FIND), against 8 modalities running findscu -W at
Orthanc in a loop for the same number of queries. Every answer is checked
(exactly the CT1 steps in its window); answers other than 200 or 503 with
Retry-After are failures. Run it through bench/run.sh, which installs the
peers and builds Pons in release mode.

    worklist.py PONS_BINARY [--queries 30] [--clients 64] [--rounds 5]
"""

import argparse
import collections
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ingest import ENV, free_port, peak_rss_mb, wait_port
from load import Conn, run_threads
from qr import pct, run_tool

TARGET = 1.5
STEPS = 50

KEYS = [
    "ScheduledProcedureStepSequence[0].Modality=CT",
    "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT1",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    "AccessionNumber", "PatientName", "PatientID", "StudyInstanceUID",
]


def write_worklist(d):
    """60 worklist files with dump2dcm: ACC0000..0049 CT at CT1, then 10 MR."""
    os.makedirs(d)
    for i in range(STEPS + 10):
        modality, station = ("CT", "CT1") if i < STEPS else ("MR", "MR1")
        dump = os.path.join(d, f"{i}.dump")
        with open(dump, "w") as f:
            f.write(f"""(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [ACC{i:04d}]
(0010,0010) PN [Patient^{i:04d}]
(0010,0020) LO [WL{i:04d}]
(0020,000d) UI [1.2.826.0.1.3680043.10.1055.88.{i}]
(0032,1060) LO [{modality} examination]
(0040,0100) SQ (Sequence with explicit length #=1)
(fffe,e000) na (Item with explicit length #=5)
(0008,0060) CS [{modality}]
(0040,0001) AE [{station}]
(0040,0002) DA [20261203]
(0040,0003) TM [{8 + i // 10:02d}{i % 10 * 5:02d}00]
(0040,0009) SH [SPS{i:04d}]
(fffe,e00d) na (ItemDelimitationItem for re-encoding)
(fffe,e0dd) na (SequenceDelimitationItem for re-encod.)
(0040,1001) SH [RP{i:04d}]
""")
        run_tool(["dump2dcm", dump, os.path.join(d, f"{i}.wl")], "dump2dcm")
        os.remove(dump)


EXPECTED = {f"ACC{i:04d}" for i in range(STEPS)}


def findscu(aec, port, out_dir=None):
    """One findscu -W run; with out_dir, the matches are written there."""
    cmd = ["findscu", "-W", "-aet", "CT1", "-aec", aec]
    if out_dir:
        cmd += ["-X", "-od", out_dir]
    for k in KEYS:
        cmd += ["-k", k]
    t, _ = run_tool(cmd + ["127.0.0.1", str(port)], f"findscu -W {aec}")
    return t


def check_findscu(aec, port, tmp):
    out = tempfile.mkdtemp(dir=tmp)
    findscu(aec, port, out)
    found = set()
    for name in os.listdir(out):
        p = subprocess.run(["dcmdump", "-q", "+P", "0008,0050", os.path.join(out, name)],
                           env=ENV, stdout=subprocess.PIPE, check=True)
        found.add(p.stdout.decode().split("[", 1)[1].split("]", 1)[0])
    if found != EXPECTED:
        raise SystemExit(f"findscu -W {aec}: {len(found)} steps, not the {STEPS} of CT1")


PATH = ("/dicom-web/modality-scheduled-procedure-steps?Modality=CT&ScheduledStationAETitle=CT1"
        "&includefield=ScheduledProcedureStepID")


def get(conn):
    start = time.perf_counter()
    conn.request("GET", PATH, headers={"Accept": "application/dicom+json"})
    r = conn.getresponse()
    body = r.read()
    t = time.perf_counter() - start
    if r.status != 200:
        raise SystemExit(f"worklist search: HTTP {r.status} {body[:300]!r}")
    return t, body


def step_time(i):
    return f"{8 + i // 10:02d}{i % 10 * 5:02d}00"


def windowed(client, rnd):
    """A client's own search: CT1 steps from 08:00 to a time of its own."""
    minutes = 5 * ((client * 7 + rnd) % 60)
    end = f"{8 + minutes // 60:02d}{minutes % 60:02d}00"
    want = {f"ACC{i:04d}" for i in range(STEPS) if step_time(i) <= end}
    return f"{PATH}&ScheduledProcedureStepStartTime=080000-{end}", want


def web_load(web, clients, rounds):
    """(outcomes, latencies, whole-run seconds) of CLIENTS kept-alive clients."""
    outcomes, latencies = collections.Counter(), []

    def client(c):
        conn = Conn(web)
        for r in range(rounds):
            path, want = windowed(c, r)
            t, status, headers, body = conn.get(path, "application/dicom+json")
            latencies.append(t)
            if status == 503 and headers.get("Retry-After"):
                outcomes["503"] += 1
                continue
            try:
                found = {s["00080050"]["Value"][0] for s in json.loads(body)}
            except (ValueError, KeyError, IndexError, TypeError):
                found = None
            if status == 200 and found == want:
                outcomes["200"] += 1
            else:
                outcomes["other"] += 1
                if outcomes["other"] <= 3:
                    print(f"load: HTTP {status}, not the {len(want)} steps: {body[:200]!r}")
        conn.close()

    return outcomes, latencies, run_threads(clients, client)


def direct_load(port, queries, workers=8):
    """Seconds for `queries` findscu -W runs by `workers` modalities at once."""
    per = -(-queries // workers)
    return run_threads(workers, lambda _: [findscu("ORTHANC", port) for _ in range(per)]), per * workers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pons")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pons-bench-wl-") as tmp:
        write_worklist(os.path.join(tmp, "worklists"))
        orthanc_http, orthanc_dicom = free_port(), free_port()
        ocfg = {
            "Name": "bench-wl", "StorageDirectory": os.path.join(tmp, "o"),
            "IndexDirectory": os.path.join(tmp, "o"), "HttpPort": orthanc_http,
            "DicomPort": orthanc_dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowFindWorklist": True, "SaveJobs": False,
            "Plugins": ["/usr/share/orthanc/plugins/libModalityWorklists.so"],
            "Worklists": {"Enable": True, "Database": os.path.join(tmp, "worklists")},
        }
        with open(os.path.join(tmp, "orthanc.json"), "w") as f:
            json.dump(ocfg, f)
        orthanc = subprocess.Popen(["Orthanc", os.path.join(tmp, "orthanc.json")], env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dimse, web = free_port(), free_port()
        with open(os.path.join(tmp, "pons.toml"), "w") as f:
            f.write(f"""
[dimse]
ae_title = "PONS"
listen = "127.0.0.1:{dimse}"
accept_any_calling_ae = true
[web]
listen = "127.0.0.1:{web}"
[upstream]
url = "http://127.0.0.1:{web}/dicom-web"
worklist = "mwl"
[spool]
dir = "{tmp}/spool"
[jobs]
url = "sqlite://{tmp}/jobs.db"
[cache]
dir = "{tmp}/cache"
[[pacs]]
name = "ris"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {orthanc_dicom}
""")
        pons = subprocess.Popen([args.pons, "serve", "--config", os.path.join(tmp, "pons.toml")],
                                env=dict(ENV, RUST_LOG="warn"), stderr=subprocess.DEVNULL)
        try:
            wait_port(orthanc_dicom)
            wait_port(dimse)
            wait_port(web)
            check_findscu("ORTHANC", orthanc_dicom, tmp)
            check_findscu("PONS", dimse, tmp)
            conn = http.client.HTTPConnection("127.0.0.1", web)
            _, body = get(conn)
            found = {s["00080050"]["Value"][0] for s in json.loads(body)}
            if found != EXPECTED:
                raise SystemExit(f"worklist search: {len(found)} steps, not the {STEPS} of CT1")
            times = {"direct": [], "a": [], "b": []}
            for _ in range(args.queries):
                times["direct"].append(findscu("ORTHANC", orthanc_dicom))
                times["a"].append(findscu("PONS", dimse))
                times["b"].append(get(conn)[0])
            loaded = web_load(web, args.clients, args.rounds)
            direct_run = direct_load(orthanc_dicom, args.clients * args.rounds)
            rss = peak_rss_mb(pons.pid)
        finally:
            pons.terminate()
            pons.wait()
            orthanc.terminate()
            orthanc.wait()

    direct = statistics.median(times["direct"])
    rows = [
        ("direct: findscu -W -> Orthanc worklist", "direct"),
        ("findscu -W -> Pons (A) -> DICOMweb worklist (B) -> Orthanc", "a"),
        ("GET worklist, kept-alive -> Pons (B) -> Orthanc", "b"),
    ]
    print(f"\nWorklist: {STEPS} of 60 scheduled steps per query, {args.queries} queries per path "
          f"(findscu: one process per query, as a modality runs it)")
    print(f"{'path':<62} {'median ms':>10} {'p95 ms':>8} {'x direct':>9}")
    for label, key in rows:
        med = statistics.median(times[key])
        print(f"{label:<62} {med * 1e3:>10.1f} {pct(times[key], 95) * 1e3:>8.1f} "
              f"{med / direct:>9.2f}")
    worst = statistics.median(times["a"]) / direct
    print(f"Pons peak RSS {rss:.0f} MB; through Pons A at {worst:.2f}x direct "
          f"(target <= {TARGET}x): {'ok' if worst <= TARGET else 'OVER'}")

    outcomes, latencies, whole = loaded
    direct_s, direct_n = direct_run
    n = args.clients * args.rounds
    print(f"\nWorklist under load: {args.clients} HTTP clients x {args.rounds} searches, "
          f"each on its own kept-alive connection")
    print(f"{'path':<44} {'200':>5} {'503+RA':>7} {'other':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'queries/s':>10} {'x direct':>9}")
    print(f"{'direct: 8 modalities, findscu -W -> Orthanc':<44} {direct_n:>5} {0:>7} {0:>6} "
          f"{'':>7} {'':>7} {direct_n / direct_s:>10.1f} {1:>9.2f}")
    print(f"{'GET worklist -> Pons (B) -> Orthanc':<44} {outcomes['200']:>5} {outcomes['503']:>7} "
          f"{outcomes['other']:>6} {pct(latencies, 50) * 1e3:>7.1f} {pct(latencies, 99) * 1e3:>7.1f} "
          f"{n / whole:>10.1f} {(n / whole) / (direct_n / direct_s):>9.2f}")
    if outcomes["other"]:
        print(f"FAILED: {outcomes['other']} answers neither the right steps nor 503 + Retry-After")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
