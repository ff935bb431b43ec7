#!/usr/bin/env python3
"""Routing benchmark: the ingest of the routing test, with two archives
against one. N CT instances from two modalities at once (storescu, one
association each, N/2 instances each):

  one archive    both call PONS; one upstream (an Orthanc)
  two archives   one calls CT_ARCHIVE, the other MR_ARCHIVE; two upstreams
                 (an Orthanc each), one spool and forwarder each

Times until the last C-STORE-RSP (acknowledged, spooled) and until every
instance is in its archive; instances per second and the ratio two/one
(routing must not cost throughput: at least 1.0x, within noise). Run it
through bench/run.sh, which installs the peers and builds Pons in release
mode.

    routing.py PONS_BINARY CT_DIR [--n 400]
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from ingest import ENV, Orthanc, free_port, peak_rss_mb, split, wait_port, wait_until


def start_pons(binary, root, upstreams, routes):
    dimse, web = free_port(), free_port()
    cfg = f"""
[dimse]
ae_title = "PONS"
listen = "127.0.0.1:{dimse}"
accept_any_calling_ae = true
[web]
listen = "127.0.0.1:{web}"
[spool]
mode = "spool"
dir = "{root}/spool"
[jobs]
url = "sqlite://{root}/jobs.db"
"""
    for name, url in upstreams:
        cfg += f'\n[[upstream]]\nname = "{name}"\nurl = "{url}"\n'
    for called, upstream in routes:
        cfg += f'\n[[route]]\ncalled_ae = "{called}"\nupstream = "{upstream}"\n'
    path = os.path.join(root, "pons.toml")
    with open(path, "w") as f:
        f.write(cfg)
    proc = subprocess.Popen([binary, "serve", "--config", path],
                            env=dict(ENV, RUST_LOG="warn"), stderr=open(os.path.join(root, "pons.log"), "w"))
    wait_port(dimse)
    return proc, dimse


def run(binary, files, two):
    with tempfile.TemporaryDirectory(prefix="pons-bench-route-") as root:
        archives = [Orthanc(os.path.join(root, f"o{i}")) for i in range(2 if two else 1)]
        upstreams = [(f"archive{i}", f"http://127.0.0.1:{o.http}/dicom-web")
                     for i, o in enumerate(archives)]
        routes = ([("CT_ARCHIVE", "archive0"), ("MR_ARCHIVE", "archive1")] if two else [])
        pons, port = start_pons(binary, root, upstreams, routes)
        try:
            groups = split(files, 2)
            called = ["CT_ARCHIVE", "MR_ARCHIVE"] if two else ["PONS", "PONS"]
            start = time.time()
            procs = []
            for i, (group, aec) in enumerate(zip(groups, called)):
                procs.append(subprocess.Popen(
                    storescu_cmd(group, aec, port, os.path.join(root, f"files{i}.txt")),
                    shell=True, env=ENV, stderr=subprocess.PIPE))
            for p in procs:
                _, err = p.communicate()
                if p.returncode != 0:
                    raise SystemExit(f"storescu failed: {err.decode()[-2000:]}")
            acked = time.time() - start
            wanted = [len(g) for g in groups] if two else [len(files)]
            wait_until(lambda: all(o.count() >= n for o, n in zip(archives, wanted)))
            done = time.time() - start
            counts = [o.count() for o in archives]
            if counts != wanted:
                raise SystemExit(f"archives hold {counts}, expected {wanted}")
            rss = peak_rss_mb(pons.pid)
        finally:
            pons.send_signal(signal.SIGTERM)
            pons.wait()
            for o in archives:
                o.stop()
    return acked, done, rss


def storescu_cmd(group, aec, port, listfile):
    with open(listfile, "w") as f:
        f.write("\n".join(group))
    return f"xargs -a {listfile} storescu -aet {aec[:2]}1 -aec {aec} 127.0.0.1 {port}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pons")
    ap.add_argument("ct_dir")
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    files = sorted(os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir)
                   if f.endswith(".dcm"))[: args.n]
    n = len(files)
    one = run(args.pons, files, two=False)
    two = run(args.pons, files, two=True)
    print(f"\nRouting: {n} CT instances from two modalities at once (two associations)")
    print(f"{'setup':<40} {'acked s':>8} {'inst/s':>8} {'archived s':>11} {'inst/s':>8} {'RSS MB':>7}")
    for label, (acked, done, rss) in (("one archive (both call PONS)", one),
                                      ("two archives (CT_ARCHIVE, MR_ARCHIVE)", two)):
        print(f"{label:<40} {acked:>8.2f} {n / acked:>8.0f} {done:>11.2f} {n / done:>8.0f} {rss:>7.0f}")
    print(f"two archives / one: acknowledged {one[0] / two[0]:.2f}x, "
          f"archived {one[1] / two[1]:.2f}x the throughput (target >= 1.0x within noise)")


if __name__ == "__main__":
    sys.exit(main())
