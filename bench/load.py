#!/usr/bin/env python3
"""Load benchmark (direction B, issue 11): Pons's DICOMweb face in front of a
DIMSE PACS under many clients, against the direct path: Orthanc's own
DICOMweb on the same data. One Orthanc ("DicomThreadsCount": 8) is both the
PACS behind Pons (a [[pacs]] entry: C-FIND, C-GET; Pons's defaults, so
max_associations 8, queue_timeout_secs 10, qido_cache_secs 0) and, at
/dicom-web, the direct path.

  (a) CLIENTS concurrent HTTP clients, each sending PAGES paged QIDO-RS
      GET /studies?limit=20&offset=k on its own kept-alive connection, against
      STUDIES one-instance studies: answers 200, 503 with Retry-After, other;
      p50/p99 latency, whole run, Pons's peak RSS.
  (b) GET /studies?PatientID=QR0500 (one match), QUERIES requests on one
      kept-alive connection per path, and on a fresh connection each for
      reference (kept-alive must not be ~40 ms worse: Nagle).
  (c) A viewer: the series metadata, then frame 1 of every instance of a CT
      series of INSTANCES instances (the first files of CT_DIR, made one study
      and one series), WORKERS requests in flight, one kept-alive connection
      per worker. A fresh Pons (empty cache) for every run; median of REPS.
  (d) VIEWERS such viewers at once on the same series (one cold run per
      path): whole run and p50/p99 per request.
  (e) RETRIEVALS concurrent cold WADO-RS GET /studies/{study} through Pons,
      against one alone (a fresh Pons for each; curl, each answer into
      /dev/shm and its parts counted). For reference: Orthanc's own, and the
      same Pons again once its cache is warm (what delivery alone costs).
      Median of REPS.

Every answer is checked: QIDO pages hold 20 distinct bench studies, the
patient query exactly its study, the metadata every instance, each frame
Rows x Columns x BitsAllocated/8 bytes, each study retrieval every instance.
Python's clients send a request again, once, on a new connection when the
server closed the kept-alive one before answering (browsers do; counted and
printed). Failed checks, statuses other than 200 (and 503 + Retry-After in
(a)) and Pons log lines at WARN or ERROR are listed under the tables, with
Orthanc's error lines per part; when anything failed the logs are kept and
the exit status is 1. Run it through
bench/run.sh, which installs the peers, builds Pons in release mode and makes
the CT data, or:

    load.py PONS_BINARY CT_DIR [--studies 1040] [--clients 256] [--pages 4]
        [--queries 50] [--instances 500] [--workers 6] [--viewers 32]
        [--retrievals 8] [--reps 3] [--parts abcde]
"""

import argparse
import collections
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import pydicom

from ingest import Pons, free_port
from qr import CT_PATIENT_ID, CT_STUDY_UID, UID_ROOT, Orthanc, make_tiny_studies, pct, run_tool

JSON = "application/dicom+json"
FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
STUDY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CT_SERIES_UID = CT_STUDY_UID + ".1"
PAGE = 20
QIDO_TARGET = 1.5  # (b): Pons's median at most 1.5x Orthanc's own
SHARED_TARGET = 1.5  # (e): N concurrent cold retrievals at most 1.5x one alone
RSS_TARGET = 150  # MB, (a)
NAGLE_MS = 20  # (b): kept-alive this much slower than a fresh connection = a stall
LABELS = {"Orthanc": "Orthanc's own DICOMweb", "Pons": "Pons (C-GET, cold cache)",
          "warm": "Pons, warm cache (reference)"}

problems = collections.Counter()  # what went wrong -> how often
targets = []  # (part, target, figure, met)
retried = collections.Counter()  # server port -> requests sent again on a new connection


def problem(msg):
    problems[msg] += 1


def target(part, what, figure, met):
    targets.append((part, what, figure, "met" if met else "MISSED"))


class Conn:
    """GETs on one kept-alive HTTP/1.1 connection (fresh: a new one for each)."""

    def __init__(self, port, fresh=False):
        self.port, self.fresh, self.conn = port, fresh, None

    def get(self, path, accept):
        """(seconds, status or error text, headers, body). A kept-alive connection
        the server closed before answering is retried once on a new one, as
        browsers do (counted in `retried`)."""
        start = time.perf_counter()
        for attempt in (0, 1):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
                self.conn.request("GET", path, headers={"Accept": accept})
                r = self.conn.getresponse()
                status, headers, body = r.status, r.headers, r.read()
                break
            except (OSError, http.client.HTTPException) as e:
                status, headers, body = f"{type(e).__name__}: {e}", {}, b""
                self.close()
                if attempt or not reused or not isinstance(
                        e, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    break
                retried[self.port] += 1
        if self.fresh:
            self.close()
        return time.perf_counter() - start, status, headers, body

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


def study_uids(body):
    try:
        return [m["0020000D"]["Value"][0] for m in json.loads(body)]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def parts_of(headers, body):
    """The part bodies of a multipart/related answer (None if it is not one)."""
    m = re.search(r'boundary="?([^";]+)', headers.get("Content-Type", ""))
    if not m:
        return None
    chunks = body.split(b"--" + m.group(1).encode())
    return [c.partition(b"\r\n\r\n")[2].removesuffix(b"\r\n") for c in chunks[1:-1]]


def run_threads(n, fn):
    """Start n threads on fn(i), release them together; seconds until all end."""
    go = threading.Barrier(n + 1)

    def body(i):
        go.wait()
        fn(i)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start


# --- (a) paged QIDO-RS under 256 clients -------------------------------------------

def paged_load(label, port, prefix, args):
    """Returns (Counter of outcomes, latencies, whole-run seconds)."""
    n_pages = args.studies // PAGE
    outcomes, latencies = collections.Counter(), []

    def client(i):
        conn = Conn(port)
        for j in range(args.pages):
            offset = PAGE * ((i * args.pages + j) % n_pages)
            t, status, headers, body = conn.get(
                f"{prefix}/studies?limit={PAGE}&offset={offset}", JSON)
            latencies.append(t)
            uids = study_uids(body) if status == 200 else None
            if status == 503 and headers.get("Retry-After"):
                outcomes["503"] += 1
            elif uids is not None and len(set(uids)) == len(uids) == PAGE and all(
                    u.startswith(UID_ROOT + "1.") for u in uids):
                outcomes["200"] += 1
            else:
                outcomes["other"] += 1
                what = (f"200 with {len(uids)} studies, not {PAGE} distinct bench studies"
                        if uids is not None else f"HTTP {status}: {body[:200]!r}")
                problem(f"(a) {label}: {what}")
        conn.close()

    whole = run_threads(args.clients, client)
    return outcomes, latencies, whole


# --- (b) one patient's studies -------------------------------------------------------

def patient_query(paths, args):
    """paths: [(label, Conn, prefix)]; returns {label: [seconds]}."""
    pid = f"QR{args.studies // 2:04d}"
    want = [f"{UID_ROOT}1.{args.studies // 2}"]
    times = {label: [] for label, _, _ in paths}
    for i in range(args.queries + 1):  # round 0 warms up, untimed
        for label, conn, prefix in paths:
            t, status, _, body = conn.get(f"{prefix}/studies?PatientID={pid}", JSON)
            if status != 200 or study_uids(body) != want:
                problem(f"(b) {label}: HTTP {status}, not exactly study {want[0]}: {body[:200]!r}")
            elif i:
                times[label].append(t)
    for _, conn, _ in paths:
        conn.close()
    return times


# --- (c), (d) a viewer ---------------------------------------------------------------

def viewer(label, port, prefix, workers, want_sops, latencies):
    """The series metadata, then frame 1 of every instance it lists, `workers`
    requests in flight; returns seconds. Appends each request's seconds."""
    start = time.perf_counter()
    base = f"{prefix}/studies/{CT_STUDY_UID}/series/{CT_SERIES_UID}"
    conns = [Conn(port) for _ in range(workers)]
    t, status, _, body = conns[0].get(f"{base}/metadata", JSON)
    latencies.append(t)
    try:
        meta = json.loads(body) if status == 200 else []
        sops = [m["00080018"]["Value"][0] for m in meta]
        first = meta[0]
        frame_bytes = (first["00280010"]["Value"][0] * first["00280011"]["Value"][0]
                       * first["00280100"]["Value"][0] // 8)
    except (ValueError, KeyError, IndexError, TypeError):
        sops, frame_bytes = [], 0
    if sorted(sops) != want_sops:
        problem(f"{label}: series metadata: HTTP {status}, {len(sops)} instances "
                f"(expected the {len(want_sops)} of the series): {body[:200]!r}")
    todo, lock = iter(sops), threading.Lock()

    def work(i):
        while True:
            with lock:
                sop = next(todo, None)
            if sop is None:
                return
            t, status, headers, body = conns[i].get(f"{base}/instances/{sop}/frames/1", FRAME)
            latencies.append(t)
            parts = parts_of(headers, body) if status == 200 else None
            if parts is None or [len(p) for p in parts] != [frame_bytes]:
                problem(f"{label}: frame 1: HTTP {status}, part sizes "
                        f"{parts and [len(p) for p in parts]} (expected [{frame_bytes}]): "
                        f"{body[:120]!r}")

    run_threads(workers, work)
    for c in conns:
        c.close()
    return time.perf_counter() - start


def viewers(label, port, prefix, args, want_sops):
    """args.viewers viewers at once; returns (whole-run seconds, every request's seconds)."""
    latencies = []
    whole = run_threads(args.viewers, lambda i: viewer(f"{label} viewer {i}", port, prefix,
                                            args.workers, want_sops, latencies))
    return whole, latencies


# --- (e) a whole study ---------------------------------------------------------------

def retrieve_study(label, port, prefix, out, n):
    """WADO-RS of the study with curl into out (best in memory: /dev/shm), its
    parts counted once it is done. Returns seconds."""
    start = time.perf_counter()
    p = subprocess.run(["curl", "-sS", "-D", out + ".head", "-o", out, "-H", f"Accept: {STUDY}",
                        f"http://127.0.0.1:{port}{prefix}/studies/{CT_STUDY_UID}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = time.perf_counter() - start
    head, body = "", b""
    if os.path.exists(out):
        with open(out + ".head", errors="replace") as f, open(out, "rb") as g:
            head, body = f.read(), g.read()
        os.remove(out)
    m = re.search(r'(?im)^content-type:.*boundary="?([^";\r\n]+)', head)
    parts = body.count(b"\r\n--" + m.group(1).encode()) if m else 0  # the close, not the first
    if p.returncode or head.split(" ", 2)[1:2] != ["200"] or parts != n:
        problem(f"{label}: curl {p.returncode} {p.stderr.decode(errors='replace')[:200]}, "
                f"{head.splitlines()[0] if head else 'no answer'}, {parts} parts "
                f"(expected {n}): {body[:200]!r}")
    return t


def concurrent_retrievals(label, port, prefix, k, n, out_dir):
    """k retrievals at once; returns the seconds of the last to finish."""
    return run_threads(k, lambda i: retrieve_study(
        f"{label} ({k} at once)", port, prefix, os.path.join(out_dir, f"study{i}"), n))


# --- set-up --------------------------------------------------------------------------

def make_ct_series(files, out):
    """Rewrite files into one study with one series in out/; their SOP UIDs, sorted."""
    os.makedirs(out)
    sops = []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = CT_STUDY_UID, CT_SERIES_UID
        ds.PatientID, ds.PatientName = CT_PATIENT_ID, "Bench^Load"
        ds.AccessionNumber, ds.StudyID, ds.SeriesNumber = "QRCT0001", "1", 1
        ds.InstanceNumber = i + 1
        ds.StudyDescription = f"Load bench CT ({len(files)} instances)"
        ds.save_as(os.path.join(out, os.path.basename(f)), enforce_file_format=True)
        sops.append(ds.SOPInstanceUID)
    return sorted(sops)


class Bench:
    def __init__(self, args, root, orthanc):
        self.args, self.root, self.orthanc = args, root, orthanc
        self.runs, self.rss, self.logs = 0, {}, []

    def through_pons(self, part, fn):
        """fn(web port) against a fresh Pons (empty cache) in front of Orthanc's
        DIMSE side; then its peak RSS is kept and its log read."""
        self.runs += 1
        name = f"pons-{part}-{self.runs}"
        extra = (f'[cache]\ndir = "{self.root}/{name}/cache"\nmax_mb = 4096\n'
                 f'[[pacs]]\nname = "orthanc"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\n'
                 f'port = {self.orthanc.dicom}\n')
        p = Pons(self.args.binary, self.root, f"http://127.0.0.1:{self.orthanc.http}/dicom-web",
                 name, extra=extra)
        try:
            return fn(p.web)
        finally:
            self.rss[part] = max(self.rss.get(part, 0), p.stop())
            shutil.rmtree(os.path.join(p.dir, "cache"), ignore_errors=True)
            self.logs.append(os.path.join(p.dir, "pons.log"))
            with open(self.logs[-1], errors="replace") as f:
                for line in f:
                    line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
                    if re.search(r"\b(WARN|ERROR)\b", line):
                        line = line.split(" ", 1)[-1]  # without its time stamp
                        problem(f"({part}) Pons log: {line[:240]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("ct_dir")
    for flag, default in (("studies", 1040), ("clients", 256), ("pages", 4), ("queries", 50),
                          ("instances", 500), ("workers", 6), ("viewers", 32),
                          ("retrievals", 8), ("reps", 3)):
        ap.add_argument(f"--{flag}", type=int, default=default)
    ap.add_argument("--parts", default="abcde")
    args = ap.parse_args()
    ct = sorted(os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir)
                if f.endswith(".dcm"))[:args.instances]
    n = len(ct)
    out = []  # printed tables

    root = tempfile.mkdtemp(prefix="pons-load-", dir=os.environ.get("PONS_BENCH_TMP"))
    make_tiny_studies(os.path.join(root, "tiny"), args.studies)
    want_sops = make_ct_series(ct, os.path.join(root, "ct"))
    orthanc = Orthanc(root, {"BENCH": ["BENCH", "127.0.0.1", free_port()],
                             "PONS": ["PONS", "127.0.0.1", free_port()]},
                      extra={"DicomThreadsCount": 8})
    bench, direct = Bench(args, root, orthanc), "/dicom-web"
    orthanc_log, peer_errors = os.path.join(root, "orthanc.log"), collections.Counter()

    def load(d, what):
        t, _ = run_tool(["storescu", "-aet", "BENCH", "-aec", "ORTHANC", "+sd", "127.0.0.1",
                         str(orthanc.dicom), os.path.join(root, d)], "storescu into Orthanc")
        print(f"load: {what} into Orthanc in {t:.1f} s ({orthanc.count()} instances)",
              file=sys.stderr)

    def part_a():
        def paged(label, port):
            warm = Conn(port)
            warm.get(f"{direct}/studies?limit=1", JSON)
            warm.close()
            outcomes, lat, whole = paged_load(label, port, direct, args)
            print(f"(a) {label}: {dict(outcomes)} in {whole:.1f} s", file=sys.stderr)
            return label, outcomes, lat, whole

        rows = [paged("Orthanc's own QIDO-RS", orthanc.http),
                bench.through_pons("a", lambda port: paged("Pons (C-FIND)", port))]
        return table_a(args, rows, bench.rss["a"])

    def part_b():
        times = bench.through_pons("b", lambda port: patient_query([
            ("Orthanc's own QIDO-RS, kept-alive", Conn(orthanc.http), direct),
            ("Orthanc's own QIDO-RS, fresh connections", Conn(orthanc.http, True), direct),
            ("Pons (C-FIND), kept-alive", Conn(port), direct),
            ("Pons (C-FIND), fresh connections", Conn(port, True), direct),
        ], args))
        return table_b(args, times)

    def part_c():
        runs = {"Orthanc": [], "Pons": []}
        for rep in range(args.reps):
            for path in runs:
                one = lambda port: viewer(f"(c) {path}", port, direct, args.workers,
                                          want_sops, [])
                runs[path].append(one(orthanc.http) if path == "Orthanc"
                                  else bench.through_pons("c", one))
            print(f"(c) run {rep + 1}: Orthanc {runs['Orthanc'][-1]:.2f} s, "
                  f"Pons {runs['Pons'][-1]:.2f} s", file=sys.stderr)
        return table_c(args, n, runs, bench.rss["c"])

    def part_d():
        d = {}
        for path in ("Orthanc", "Pons"):
            many = lambda port: viewers(f"(d) {path}", port, direct, args, want_sops)
            d[path] = many(orthanc.http) if path == "Orthanc" else bench.through_pons("d", many)
        print(f"(d) Orthanc {d['Orthanc'][0]:.1f} s, Pons {d['Pons'][0]:.1f} s",
              file=sys.stderr)
        return table_d(args, n, d, bench.rss["d"])

    def part_e():
        k = args.retrievals
        e = {(path, c): [] for path in ("Orthanc", "Pons", "warm") for c in (1, k)}
        # The answers land in memory: writing k x 250 MB to disk would time the disk.
        shm = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else root)

        def at_once(path, port, c):
            e[(path, c)].append(concurrent_retrievals(f"(e) {path}", port, direct, c, n, shm))

        def cold_then_warm(port):  # the cold k, then the same Pons again, warm
            for path, c in (("Pons", k), ("warm", 1), ("warm", k)):
                at_once(path, port, c)

        for rep in range(args.reps):
            at_once("Orthanc", orthanc.http, 1)
            at_once("Orthanc", orthanc.http, k)
            bench.through_pons("e", lambda port: at_once("Pons", port, 1))
            bench.through_pons("e", cold_then_warm)
            print(f"(e) run {rep + 1}: " + ", ".join(
                f"{p} x{c} {v[-1]:.2f} s" for (p, c), v in e.items()), file=sys.stderr)
        shutil.rmtree(shm)
        return table_e(args, n, e, bench.rss["e"])

    try:
        load("tiny", f"{args.studies} tiny studies")
        if orthanc.count() != args.studies:
            raise SystemExit(f"Orthanc holds {orthanc.count()} instances, not {args.studies}")
        for name, fn in (("a", part_a), ("b", part_b), ("c", part_c), ("d", part_d),
                         ("e", part_e)):
            if name not in args.parts:
                continue
            if name in "cde" and orthanc.count() == args.studies:
                load("ct", f"{n}-instance CT series")
            mark = os.path.getsize(orthanc_log)
            out.append(fn())
            with open(orthanc_log, errors="replace") as f:  # Orthanc's errors meanwhile
                f.seek(mark)
                for line in f:
                    if line.startswith("E"):
                        peer_errors[f"({name}) {line.split('] ', 1)[-1].strip()}"] += 1
    except BaseException:
        print(f"load: failed; its files are kept in {root}", file=sys.stderr)
        raise
    finally:
        orthanc.stop()

    print("\n".join(out))
    print("\n**Targets**\n")
    print("| part | target | figure | verdict |\n|---|---|---|---|")
    for row in targets:
        print("| " + " | ".join(row) + " |")
    print()
    for port, count in retried.items():
        print(f"- {count} requests to {'Orthanc' if port == orthanc.http else 'Pons'} were sent "
              f"again on a new connection: the server had closed the kept-alive one.")
    for msg, count in peer_errors.items():
        print(f"- Orthanc's log, {count} x: {msg}")
    if problems:
        keep = tempfile.mkdtemp(prefix="pons-load-logs-", dir=os.environ.get("PONS_BENCH_TMP"))
        for log in bench.logs + [orthanc_log]:
            shutil.copy(log, os.path.join(keep, os.path.basename(os.path.dirname(log))
                                          + "-" + os.path.basename(log)))
        print(f"\n**Problems** (logs kept in {keep})\n")
        for msg, count in problems.most_common(40):
            print(f"- {count} x {msg}")
        if len(problems) > 40:
            print(f"- ... and {len(problems) - 40} other kinds")
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if problems else 0)


# --- tables --------------------------------------------------------------------------

def head(*cols):
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"


def ms(t):
    return f"{t * 1e3:.1f}"


def table_a(args, rows, rss):
    total = args.clients * args.pages
    s = (f"\n**(a)** {args.clients} clients x {args.pages} paged QIDO-RS "
         f"`GET /studies?limit={PAGE}&offset=k` (one kept-alive connection each), "
         f"{args.studies} studies in Orthanc (8 DICOM threads)\n\n")
    s += head("path", "200", "503 + Retry-After", "other", "p50 s", "p99 s", "whole run s",
              "Pons peak RSS")
    for label, o, lat, whole in rows:
        s += (f"| {label} | {o['200']} | {o['503']} | {o['other']} | "
              f"{statistics.median(lat):.2f} | {pct(lat, 99):.2f} | {whole:.1f} | "
              f"{f'{rss:.0f} MB' if label.startswith('Pons') else '-'} |\n")
    (_, _, d_lat, d_whole), (_, o, p_lat, p_whole) = rows
    s += (f"| Pons / Orthanc | | | | {statistics.median(p_lat) / statistics.median(d_lat):.2f}x"
          f" | {pct(p_lat, 99) / pct(d_lat, 99):.2f}x | {p_whole / d_whole:.2f}x | |\n")
    target("a", "100 % answered 200", f"{100 * o['200'] / total:.1f} %", o["200"] == total)
    target("a", "no answer but 200 or 503 + Retry-After", str(o["other"]), o["other"] == 0)
    target("a", "whole run <= Orthanc's own", f"{p_whole / d_whole:.2f}x", p_whole <= d_whole)
    target("a", "p99 <= Orthanc's own", f"{pct(p_lat, 99) / pct(d_lat, 99):.2f}x",
           pct(p_lat, 99) <= pct(d_lat, 99))
    target("a", f"Pons peak RSS < {RSS_TARGET} MB", f"{rss:.0f} MB", rss < RSS_TARGET)
    return s


def table_b(args, times):
    s = (f"\n**(b)** `GET /studies?PatientID=QR{args.studies // 2:04d}` (1 match), "
         f"{args.queries} requests per path\n\n")
    s += head("path", "median ms", "p95 ms", "median / Orthanc's own kept-alive")
    base = statistics.median(times["Orthanc's own QIDO-RS, kept-alive"])
    for label, t in times.items():
        s += (f"| {label} | {ms(statistics.median(t))} | {ms(pct(t, 95))} | "
              f"{statistics.median(t) / base:.2f}x |\n")
    keep = statistics.median(times["Pons (C-FIND), kept-alive"])
    fresh = statistics.median(times["Pons (C-FIND), fresh connections"])
    target("b", f"Pons kept-alive median <= {QIDO_TARGET}x Orthanc's own", f"{keep / base:.2f}x",
           keep / base <= QIDO_TARGET)
    target("b", f"Pons kept-alive - fresh median < {NAGLE_MS} ms (no Nagle stall)",
           f"{(keep - fresh) * 1e3:+.1f} ms", keep - fresh < NAGLE_MS / 1e3)
    return s


def table_c(args, n, runs, rss):
    s = (f"\n**(c)** A viewer: series metadata, then frame 1 of each of {n} CT instances "
         f"(512 KB each), {args.workers} requests in flight, cold Pons each run; "
         f"median of {args.reps}\n\n")
    s += head("path", "seconds (median)", "runs", "Pons / Orthanc", "Pons peak RSS")
    d, p = statistics.median(runs["Orthanc"]), statistics.median(runs["Pons"])
    s += f"| {LABELS['Orthanc']} | {d:.2f} | {', '.join(f'{t:.2f}' for t in runs['Orthanc'])} | - | - |\n"
    s += (f"| {LABELS['Pons']} | {p:.2f} | {', '.join(f'{t:.2f}' for t in runs['Pons'])}"
          f" | {p / d:.2f}x | {rss:.0f} MB |\n")
    target("c", "viewer load <= Orthanc's own", f"{p / d:.2f}x", p <= d)
    return s


def table_d(args, n, d, rss):
    s = (f"\n**(d)** {args.viewers} such viewers at once on the same series "
         f"({args.viewers * (n + 1)} requests per path), one cold run each\n\n")
    s += head("path", "whole run s", "p50 ms", "p99 ms", "Pons peak RSS")
    for label, (whole, lat) in d.items():
        s += (f"| {LABELS[label]} | {whole:.2f} | {ms(statistics.median(lat))} | {ms(pct(lat, 99))} | "
              f"{f'{rss:.0f} MB' if label == 'Pons' else '-'} |\n")
    (dw, dl), (pw, pl) = d["Orthanc"], d["Pons"]
    s += (f"| Pons / Orthanc | {pw / dw:.2f}x | {statistics.median(pl) / statistics.median(dl):.2f}x"
          f" | {pct(pl, 99) / pct(dl, 99):.2f}x | |\n")
    target("d", f"{args.viewers} viewers: whole run <= Orthanc's own", f"{pw / dw:.2f}x", pw <= dw)
    target("d", f"{args.viewers} viewers: p99 <= Orthanc's own",
           f"{pct(pl, 99) / pct(dl, 99):.2f}x", pct(pl, 99) <= pct(dl, 99))
    return s


def table_e(args, n, e, rss):
    k = args.retrievals
    s = (f"\n**(e)** WADO-RS `GET /studies/{{study}}` of the {n}-instance study, {k} at once "
         f"versus one alone (curl); a fresh Pons (cold cache) per measurement, median of "
         f"{args.reps}\n\n")
    s += head("path", "1 alone s", f"{k} at once s (last done)", f"{k} at once / 1 alone",
              "Pons peak RSS")
    for path in ("Orthanc", "warm", "Pons"):
        one, many = statistics.median(e[(path, 1)]), statistics.median(e[(path, k)])
        s += (f"| {LABELS[path]} | {one:.2f} | {many:.2f} | {many / one:.2f}x | "
              f"{f'{rss:.0f} MB' if path == 'Pons' else '-'} |\n")
    s += ("\nThe warm row asks the Pons that has just served the cold row again: the same"
          " bytes to the same clients without the PACS, i.e. what delivery alone costs here.\n")
    target("e", f"{k} concurrent cold retrievals <= {SHARED_TARGET}x one alone",
           f"{many / one:.2f}x", many / one <= SHARED_TARGET)
    return s


if __name__ == "__main__":
    main()
