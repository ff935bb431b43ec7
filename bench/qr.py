#!/usr/bin/env python3
"""Query/retrieve benchmark (direction A): DCMTK findscu/movescu/getscu

  through Pons   (SCU -> Pons -> QIDO-RS / WADO-RS on Orthanc's DICOMweb plugin)
  versus direct  (SCU -> Orthanc's own C-FIND/C-MOVE/C-GET SCP)

against one Orthanc archive holding STUDIES one-instance studies (8x8 pixels,
PatientID QR0000..) plus one CT study of RETRIEVE instances (~0.5 MB each),
made from the first RETRIEVE files of ct/N (rewritten into a single study).

  C-FIND, study level: one PatientID (1 match), PatientID=QR01* (100 matches)
      and PatientID=QR* (every tiny study); QUERIES queries each per path,
      alternating; median and p95 wall time of one findscu run (process start,
      association, query, release).
  C-MOVE of the CT study into a DCMTK storescp (-od, the same one for both
      paths); C-GET of it with getscu -od. REPS runs each per path,
      alternating; the median run is reported. Each run must deliver every
      instance.

Pons's peak RSS (VmHWM) is read from a fresh Pons per operation. Prints the
tables. Run it through bench/run.sh, which installs the peers, builds Pons in
release mode and makes the CT data.

    qr.py PONS_BINARY CT_DIR [--studies 1000] [--retrieve 500] [--queries 50] [--reps 3]
          [--no-find]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from ingest import ENV, Pons, free_port, wait_port

UID_ROOT = "1.2.826.0.1.3680043.8.498.7734."  # pydicom's root + a bench arc
CT_STUDY_UID = UID_ROOT + "2.1"
CT_PATIENT_ID = "BENCHCT"  # outside PatientID=QR*
STUDY_KEYS = ["StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber",
              "PatientID"]
FIND_TARGET = 1.5  # C-FIND through Pons: at most 1.5x the direct latency
RETRIEVE_TARGET = 0.8  # C-MOVE/C-GET through Pons: at least 0.8x the direct throughput


def make_tiny_studies(out, n):
    """n one-instance studies, 8x8 16-bit CT, PatientID QR0000.., in out/."""
    os.makedirs(out)
    pixels = bytes(range(128))
    for i in range(n):
        study, series, sop = (f"{UID_ROOT}1.{i}", f"{UID_ROOT}1.{i}.1", f"{UID_ROOT}1.{i}.1.1")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyDate = f"2023{1 + i % 12:02d}{1 + i % 28:02d}"
        ds.StudyTime = "120000"
        ds.AccessionNumber = f"QRACC{i:04d}"
        ds.Modality = "CT"
        ds.StudyDescription = f"Tiny study {i}"
        ds.PatientName = f"Bench^Tiny{i}"
        ds.PatientID = f"QR{i:04d}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = str(i)
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels
        ds.save_as(os.path.join(out, f"tiny{i:04d}.dcm"), enforce_file_format=True)


def make_ct_study(files, out):
    """Rewrite files (several studies of ct/N) into one study in out/."""
    os.makedirs(out)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = CT_STUDY_UID
        ds.PatientID = CT_PATIENT_ID
        ds.PatientName = "Bench^Retrieve"
        ds.AccessionNumber = "QRCT0001"
        ds.StudyID = "1"
        ds.StudyDescription = f"Retrieve bench CT ({len(files)} instances)"
        ds.save_as(os.path.join(out, os.path.basename(f)), enforce_file_format=True)


class Orthanc:
    """Orthanc as DICOMweb origin (for Pons) and as DIMSE PACS (the direct path)."""

    def __init__(self, root, modalities, extra=None):
        """extra: more Orthanc configuration keys, merged over the defaults."""
        self.http = free_port()
        self.dicom = free_port()
        self.dir = os.path.join(root, "orthanc")
        os.makedirs(self.dir)
        cfg = {
            "Name": "bench-qr", "StorageDirectory": self.dir, "IndexDirectory": self.dir,
            "HttpPort": self.http, "DicomPort": self.dicom, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True, "DicomModalities": modalities,
            "SaveJobs": False,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        cfg.update(extra or {})
        path = os.path.join(root, "orthanc.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.log = open(os.path.join(root, "orthanc.log"), "w")
        self.proc = subprocess.Popen(["Orthanc", path], env=ENV,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.http)
        wait_port(self.dicom)

    def count(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/statistics") as r:
            return json.load(r)["CountInstances"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def run_tool(cmd, what):
    """Run a DCMTK tool; return (wall seconds, stdout+stderr). Fail loudly."""
    start = time.perf_counter()
    p = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t = time.perf_counter() - start
    log = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"{what} failed ({p.returncode}): {' '.join(cmd)}\n{log[-3000:]}")
    return t, log


def findscu(aec, port, query, check=None):
    """One findscu run; returns wall seconds. With check=N, runs verbose and
    fails unless the final status is Success after exactly N matches (the
    timed runs stay quiet: printing every match would time findscu's logger)."""
    cmd = ["findscu", "-S", "-aet", "BENCH", "-aec", aec,
           "-k", "QueryRetrieveLevel=STUDY", "-k", query]
    for k in STUDY_KEYS:
        if not query.startswith(k + "="):
            cmd += ["-k", k]
    if check is not None:
        cmd.append("-v")
    t, log = run_tool(cmd + ["127.0.0.1", str(port)], f"findscu {aec}")
    if check is not None:
        lines = log.splitlines()
        matches = sum(1 for line in lines if "Find Response:" in line and "(Pending)" in line)
        if matches != check or "Received Final Find Response (Success)" not in log:
            raise SystemExit(f"findscu {aec} {query}: {matches} matches (expected {check}) "
                             f"or no final Success\n{log[-1500:]}")
    return t


def qido(upstream, query, page=500):
    """The QIDO-RS requests Pons makes for findscu's study query (return keys as
    includefield, paged by qido_page_size), straight to the origin with urllib:
    the origin's share of a C-FIND through Pons. Returns (seconds, matches)."""
    key, _, value = query.partition("=")
    tags = {"StudyInstanceUID": "0020000D", "StudyDate": "00080020",
            "StudyDescription": "00081030", "AccessionNumber": "00080050",
            "PatientID": "00100020"}
    params = [("includefield", tags[k]) for k in STUDY_KEYS if k != key]
    params += [(tags[key], value), ("includefield", tags[key])]
    start = time.perf_counter()
    matches, offset = 0, 0
    while True:
        # Like reqwest (and unlike urlencode's default), keep "*" as is: Orthanc
        # matches a "%2A" literally.
        q = urllib.parse.urlencode(params + [("limit", page), ("offset", offset)], safe="*")
        req = urllib.request.Request(f"{upstream}/studies?{q}",
                                     headers={"Accept": "application/dicom+json"})
        with urllib.request.urlopen(req) as r:
            body = r.read()
        n = len(json.loads(body)) if body.strip() else 0
        matches += n
        offset += n
        if n < page:
            return time.perf_counter() - start, matches


def count_files(d):
    files = [os.path.join(d, f) for f in os.listdir(d)]
    return len(files), sum(os.path.getsize(f) for f in files)


def clear(d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("ct_dir")
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--retrieve", type=int, default=500)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-find", action="store_true",
                    help="skip the C-FIND part (retrieve only)")
    args = ap.parse_args()

    ct = sorted(os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir)
                if f.endswith(".dcm"))[:args.retrieve]
    n_ret = len(ct)
    with tempfile.TemporaryDirectory(prefix="pons-qr-",
                                     dir=os.environ.get("PONS_BENCH_TMP")) as root:
        make_tiny_studies(os.path.join(root, "tiny"), args.studies)
        make_ct_study(ct, os.path.join(root, "ct"))

        # The move destination: one storescp for both paths.
        scp_port = free_port()
        scp_dir = os.path.join(root, "storescp")
        os.makedirs(scp_dir)
        scp_log = open(os.path.join(root, "storescp.log"), "w")
        scp = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "-od", scp_dir,
                                str(scp_port)], env=ENV, stdout=scp_log,
                               stderr=subprocess.STDOUT)
        wait_port(scp_port)

        orthanc = Orthanc(root, {
            "STORESCP": ["STORESCP", "127.0.0.1", scp_port],
            "BENCH": ["BENCH", "127.0.0.1", free_port()],  # allowed to find/move/get
        })
        pons = None
        try:
            t_load, _ = run_tool(["storescu", "-aet", "BENCH", "-aec", "ORTHANC", "+sd",
                                  "127.0.0.1", str(orthanc.dicom),
                                  os.path.join(root, "tiny"), os.path.join(root, "ct")],
                                 "storescu into Orthanc")
            total = args.studies + n_ret
            if orthanc.count() != total:
                raise SystemExit(f"Orthanc holds {orthanc.count()} instances, not {total}")
            print(f"qr: archive loaded ({total} instances) in {t_load:.1f} s", file=sys.stderr)
            upstream = f"http://127.0.0.1:{orthanc.http}/dicom-web"

            def new_pons(name):
                dest = f'[[ae]]\ntitle = "STORESCP"\nhost = "127.0.0.1"\nport = {scp_port}\n'
                return Pons(args.binary, root, upstream, name, extra=dest)

            # --- C-FIND ----------------------------------------------------------
            some = args.studies // 2
            queries = [
                (f"PatientID=QR{some:04d}", 1),
                ("PatientID=QR01*", min(100, max(0, args.studies - 100))),
                ("PatientID=QR*", args.studies),
            ]
            find_rows, find_rss = [], 0.0
            pons = None if args.no_find else new_pons("pons-find")
            for query, expect in queries if pons else []:
                times = {"direct": [], "pons": [], "qido": []}
                # Round 0 (verbose, not timed) warms up and checks the matches;
                # the last check runs after the timed rounds.
                for i in range(args.queries + 2):
                    for path, aec, port in (("direct", "ORTHANC", orthanc.dicom),
                                            ("pons", "PONS", pons.dimse)):
                        timed = 0 < i <= args.queries
                        t = findscu(aec, port, query, None if timed else expect)
                        if timed:
                            times[path].append(t)
                    t, got = qido(upstream, query)
                    if got != expect:
                        raise SystemExit(f"QIDO-RS {query}: {got} matches, expected {expect}")
                    if 0 < i <= args.queries:
                        times["qido"].append(t)
                find_rows.append((query, expect, times))
            if pons:
                find_rss = pons.stop()
                pons = None

            # --- C-MOVE and C-GET -----------------------------------------------
            get_dir = os.path.join(root, "getscu")
            keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_STUDY_UID}"]

            def move(aec, port):
                clear(scp_dir)
                t, _ = run_tool(["movescu", "-S", "-aet", "BENCH", "-aec", aec, "-aem",
                                 "STORESCP", *keys, "127.0.0.1", str(port)], f"movescu {aec}")
                return t, count_files(scp_dir)

            def get(aec, port):
                clear(get_dir)
                t, _ = run_tool(["getscu", "-S", "-aet", "BENCH", "-aec", aec, "-od", get_dir,
                                 *keys, "127.0.0.1", str(port)], f"getscu {aec}")
                return t, count_files(get_dir)

            retrieve_rows = []
            for op, fn in (("C-MOVE", move), ("C-GET", get)):
                pons = new_pons(f"pons-{op.lower()}")
                runs = {"direct": [], "pons": []}
                for _ in range(args.reps):
                    for path, aec, port in (("direct", "ORTHANC", orthanc.dicom),
                                            ("pons", "PONS", pons.dimse)):
                        t, (n, size) = fn(aec, port)
                        if n != n_ret:
                            raise SystemExit(f"{op} via {path}: {n} files received, "
                                             f"expected {n_ret}")
                        runs[path].append((t, size))
                rss = pons.stop()
                pons = None
                retrieve_rows.append((op, runs, rss))
        finally:
            if pons:
                pons.stop()
            orthanc.stop()
            scp.terminate()
            scp.wait()

    if find_rows:
        print_find(args, find_rows, find_rss)
    print_retrieve(args, n_ret, retrieve_rows)


def print_find(args, find_rows, find_rss):
    print(f"\nC-FIND, study level, against {args.studies + 1} studies in Orthanc: "
          f"{args.queries} findscu runs per query and path (process start to exit)\n")
    head = ("query", "matches", "direct median ms", "direct p95 ms", "Pons median ms",
            "Pons p95 ms", "Pons/direct (median)", "Pons/direct (p95)", "target",
            "QIDO-RS alone median ms", "Pons peak RSS")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for query, expect, times in find_rows:
        d_med, p_med = statistics.median(times["direct"]), statistics.median(times["pons"])
        d95, p95 = pct(times["direct"], 95), pct(times["pons"], 95)
        ratio = p_med / d_med
        verdict = "met" if ratio <= FIND_TARGET else "MISSED"
        print(f"| `{query}` | {expect} | {d_med * 1e3:.1f} | {d95 * 1e3:.1f} | "
              f"{p_med * 1e3:.1f} | {p95 * 1e3:.1f} | {ratio:.2f}x | {p95 / d95:.2f}x | "
              f"<= {FIND_TARGET}x: {verdict} | {statistics.median(times['qido']) * 1e3:.1f} | "
              f"{find_rss:.0f} MB |")


def print_retrieve(args, n_ret, retrieve_rows):
    mb = statistics.median(s for _, s in retrieve_rows[0][1]["direct"]) / 1e6
    print(f"\nRetrieve of one {n_ret}-instance CT study ({mb:.0f} MB as received), "
          f"median of {args.reps} runs per path\n")
    head = ("operation", "path", "seconds", "inst/s", "MB/s", "Pons/direct throughput",
            "target", "Pons peak RSS")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for op, runs, rss in retrieve_rows:
        t_d = statistics.median(t for t, _ in runs["direct"])
        t_p = statistics.median(t for t, _ in runs["pons"])
        for path, t in (("direct", t_d), ("pons", t_p)):
            size = statistics.median(s for _, s in runs[path])
            if path == "direct":
                label = {"C-MOVE": "movescu -> Orthanc C-MOVE -> storescp",
                         "C-GET": "getscu <- Orthanc C-GET"}[op]
                print(f"| {op} | {label} (direct) | {t:.2f} | {n_ret / t:.0f} | "
                      f"{size / 1e6 / t:.0f} | - | - | - |")
            else:
                label = {"C-MOVE": "movescu -> Pons -> QIDO+WADO-RS -> storescp",
                         "C-GET": "getscu <- Pons <- QIDO+WADO-RS"}[op]
                ratio = t_d / t
                verdict = "met" if ratio >= RETRIEVE_TARGET else "MISSED"
                print(f"| {op} | {label} | {t:.2f} | {n_ret / t:.0f} | {size / 1e6 / t:.0f} | "
                      f"{ratio:.2f}x | >= {RETRIEVE_TARGET}x: {verdict} | {rss:.0f} MB |")
    print("\n'QIDO-RS alone' is the same QIDO-RS requests Pons sends, made from Python"
          " straight to Orthanc: the origin's share of the Pons path.")
    print("C-FIND ratios are Pons's latency over the direct latency (lower is better);"
          " retrieve ratios are Pons's throughput over the direct throughput (higher is"
          " better). Orthanc is the origin behind Pons and the direct PACS alike.")


if __name__ == "__main__":
    main()
