#!/usr/bin/env python3
"""WADO-RS benchmark (direction B): retrieve of one CT study of RETRIEVE
instances (~0.5 MB each, made from the first RETRIEVE files of ct/N)

  through Pons  (curl <- Pons WADO-RS <- C-GET, or C-MOVE to Pons's own AE,
                 <- Orthanc's DIMSE side), the multipart answer written to
                 one file;
  versus direct (getscu -od <- Orthanc's C-GET SCP).

Each Pons run starts a fresh Pons with an empty cache, so every run is a
real PACS retrieval; a last run on the same Pons shows the study served
from its cache. REPS runs per path, alternating; the median run is
reported, with time to the first body byte for Pons. Each run must deliver
every instance. Pons's peak RSS (VmHWM) is the largest over its runs.
Run it through bench/run.sh, which installs the peers, builds Pons in release
mode and makes the CT data.

    wado.py PONS_BINARY CT_DIR [--retrieve 500] [--reps 3]
"""

import argparse
import os
import resource
import shutil
import subprocess
import statistics
import sys
import tempfile
import time

from ingest import Pons, free_port
from qr import CT_STUDY_UID, Orthanc, clear, count_files, make_ct_study, run_tool

THROUGHPUT_TARGET = 0.8  # Pons at least 0.8x getscu's throughput
FIRST_BYTE_TARGET = 0.2  # seconds
RSS_TARGET = 150  # MB


TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds (user + system) a running process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wado(port, out_path):
    """GET the study through Pons with curl (a client that keeps up: Python's
    http.client reads chunked bodies at a third of curl's speed); returns
    (seconds, first body byte seconds, parts, bytes)."""
    start = time.perf_counter()
    p = subprocess.run(
        ["curl", "-sS", "-o", out_path, "-D", out_path + ".headers",
         "-H", 'Accept: multipart/related; type="application/dicom"',
         "-w", "%{http_code} %{time_starttransfer} %{size_download}",
         f"http://127.0.0.1:{port}/dicom-web/studies/{CT_STUDY_UID}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.perf_counter() - start
    status, first, size = p.stdout.split()
    if p.returncode != 0 or status != "200":
        raise SystemExit(f"WADO-RS through Pons: curl {p.returncode}, HTTP {status}: "
                         f"{p.stderr[-500:]}")
    with open(out_path + ".headers") as f:
        ct = next(l for l in f if l.lower().startswith("content-type:"))
    delim = b"--" + ct.split("boundary=")[1].strip().strip('"').encode()
    with open(out_path, "rb") as f:
        parts = f.read().count(delim) - 1  # the closing delimiter
    return t, float(first), parts, int(size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("ct_dir")
    ap.add_argument("--retrieve", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    ct = sorted(os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir)
                if f.endswith(".dcm"))[:args.retrieve]
    n = len(ct)
    with tempfile.TemporaryDirectory(prefix="pons-wado-",
                                     dir=os.environ.get("PONS_BENCH_TMP")) as root:
        make_ct_study(ct, os.path.join(root, "ct"))
        pons_ports = {"c-get": free_port(), "c-move": free_port()}
        orthanc = Orthanc(root, {
            "BENCH": ["BENCH", "127.0.0.1", free_port()],
            # C-MOVE mode: Orthanc sends to Pons's listener.
            "PONS": ["PONS", "127.0.0.1", pons_ports["c-move"]],
        })
        pons = None
        try:
            t_load, _ = run_tool(["storescu", "-aet", "BENCH", "-aec", "ORTHANC", "+sd",
                                  "127.0.0.1", str(orthanc.dicom), os.path.join(root, "ct")],
                                 "storescu into Orthanc")
            if orthanc.count() != n:
                raise SystemExit(f"Orthanc holds {orthanc.count()} instances, not {n}")
            print(f"wado: study loaded ({n} instances) in {t_load:.1f} s", file=sys.stderr)
            upstream = f"http://127.0.0.1:{orthanc.http}/dicom-web"
            get_dir = os.path.join(root, "getscu")
            out = os.path.join(root, "wado.out")
            run_id = [0]

            def new_pons(mode):
                run_id[0] += 1
                name = f"pons-{mode}-{run_id[0]}"
                extra = (f'[cache]\ndir = "{root}/{name}/cache"\nmax_mb = 4096\n'
                         f'[[pacs]]\nname = "main"\nae_title = "ORTHANC"\n'
                         f'host = "127.0.0.1"\nport = {orthanc.dicom}\nretrieve = "{mode}"\n')
                return Pons(args.binary, root, upstream, name, extra=extra,
                            dimse=pons_ports[mode])

            def direct():
                clear(get_dir)
                os.sync()  # every run starts with nothing waiting for the disk
                c0, o0 = children_cpu(), proc_cpu(orthanc.proc.pid)
                t, _ = run_tool(["getscu", "-S", "-aet", "BENCH", "-aec", "ORTHANC",
                                 "-od", get_dir, "-k", "QueryRetrieveLevel=STUDY",
                                 "-k", f"StudyInstanceUID={CT_STUDY_UID}",
                                 "127.0.0.1", str(orthanc.dicom)], "getscu")
                cpu = children_cpu() - c0 + proc_cpu(orthanc.proc.pid) - o0
                files, size = count_files(get_dir)
                if files != n:
                    raise SystemExit(f"getscu: {files} files, expected {n}")
                return t, None, size, cpu

            def through(p):
                os.sync()
                c0, o0, p0 = children_cpu(), proc_cpu(orthanc.proc.pid), proc_cpu(p.proc.pid)
                t, first, parts, size = wado(p.web, out)
                cpu = (children_cpu() - c0 + proc_cpu(orthanc.proc.pid) - o0
                       + proc_cpu(p.proc.pid) - p0)
                if parts != n:
                    raise SystemExit(f"WADO-RS through Pons: {parts} parts, expected {n}")
                return t, first, size, cpu

            runs = {"direct": [], "c-get": [], "c-move": [], "cached": []}
            rss = {"c-get": 0.0, "c-move": 0.0}
            for rep in range(args.reps):
                runs["direct"].append(direct())
                print(f"wado: run {rep + 1}: getscu {runs['direct'][-1][0]:.2f} s", file=sys.stderr)
                for mode in ("c-get", "c-move"):
                    pons = new_pons(mode)
                    runs[mode].append(through(pons))
                    print(f"wado: run {rep + 1}: Pons {mode} {runs[mode][-1][0]:.2f} s",
                          file=sys.stderr)
                    if mode == "c-get" and rep == args.reps - 1:
                        runs["cached"].append(through(pons))
                    rss[mode] = max(rss[mode], pons.stop())
                    # Its cache goes: written-back gigabytes would slow the next runs.
                    shutil.rmtree(pons.dir, ignore_errors=True)
                    pons = None
        finally:
            if pons:
                pons.stop()
            orthanc.stop()

    def median_run(rs):
        return sorted(rs, key=lambda r: r[0])[len(rs) // 2]

    t_d, _, size_d, cpu_d = median_run(runs["direct"])
    print(f"\nWADO-RS of one {n}-instance CT study ({size_d / 1e6:.0f} MB), "
          f"median of {args.reps} runs per path\n")
    head = ("path", "seconds", "inst/s", "MB/s", "first byte ms", "CPU s (all processes)",
            "Pons/getscu throughput", "target", "Pons peak RSS")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    print(f"| getscu <- Orthanc C-GET (direct, files to disk) | {t_d:.2f} | {n / t_d:.0f} | "
          f"{size_d / 1e6 / t_d:.0f} | - | {cpu_d:.2f} | - | - | - |")
    labels = {
        "c-get": "curl <- Pons WADO-RS <- C-GET <- Orthanc",
        "c-move": "curl <- Pons WADO-RS <- C-MOVE to Pons <- Orthanc",
        "cached": "curl <- Pons WADO-RS from its cache",
    }
    for key, label in labels.items():
        t, first, size, cpu = median_run(runs[key])
        ratio = t_d / t
        verdict = ("met" if ratio >= THROUGHPUT_TARGET and first < FIRST_BYTE_TARGET
                   else "MISSED")
        peak = rss.get(key, rss["c-get"])
        print(f"| {label} | {t:.2f} | {n / t:.0f} | {size / 1e6 / t:.0f} | "
              f"{first * 1e3:.0f} | {cpu:.2f} | {ratio:.2f}x | >= {THROUGHPUT_TARGET}x, first byte < "
              f"{FIRST_BYTE_TARGET * 1e3:.0f} ms: {verdict} | {peak:.0f} MB "
              f"({'met' if peak < RSS_TARGET else 'MISSED'} < {RSS_TARGET}) |")
    print("\nCPU s: user + system seconds of every process on the path (Orthanc, the client,"
          " Pons), for the median run: the machine has 2 cores, so a path that needs more"
          " CPU loses most when other work runs.")
    print("Throughput ratios are getscu's time over Pons's (higher is better). Pons"
          " writes every instance to its cache on the way; the cached row is a second"
          " request to the same Pons.")


if __name__ == "__main__":
    main()
