#!/usr/bin/env python3
"""Hostile-input benchmark (issue 12): a normal storescu run into Pons
(spool mode) alone, and again while 32 hostile connections keep sending the
poisoned C-ECHO command set (an element declaring 2 GiB in a 74-byte
command): each associates, sends it, is aborted, and comes back 200 ms
later. Pons's peak RSS over the whole run, the attacks answered with
A-ABORT, and the throughput ratio (target >= 0.9). Median of REPS.

    hostile.py PONS_BINARY CT_DIR [--n 200] [--reps 3] [--attackers 32]
"""

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from ingest import ENV, free_port, peak_rss_mb, run_storescu, wait_port  # noqa: E402

VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"


def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(calling=b"HOSTILE", called=b"PONS"):
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    body += item(0x20, bytes([1, 0, 0, 0]) + item(0x30, VERIFICATION) + item(0x40, IMPLICIT_LE))
    body += item(0x50, item(0x51, struct.pack(">I", 16384)))
    return struct.pack(">BBI", 1, 0, len(body)) + body


def poisoned_pdata():
    def element(elem, length, value):
        return struct.pack("<HHI", 0, elem, length) + value

    command = (
        element(0x0002, 0x7FFFFFFF, VERIFICATION + b"\0")
        + element(0x0100, 2, struct.pack("<H", 0x0030))
        + element(0x0110, 2, struct.pack("<H", 1))
        + element(0x0800, 2, struct.pack("<H", 0x0101))
    )
    pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def attacker(port, stop, counts):
    rq, pdata = associate_rq(), poisoned_pdata()
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(rq)
                head = s.recv(6)
                if not head or head[0] != 0x02:
                    counts["refused"] += 1
                else:
                    s.sendall(pdata)
                    rest = b""
                    while chunk := s.recv(65536):
                        rest += chunk
                    # The A-ASSOCIATE-AC's remainder, then an A-ABORT (07).
                    counts["aborted" if b"\x07\x00\x00\x00\x00\x04" in rest else "other"] += 1
        except OSError:
            counts["error"] += 1
        stop.wait(0.2)


def start_pons(binary, root):
    dimse, web = free_port(), free_port()
    cfg = os.path.join(root, "pons.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[dimse]\nae_title = "PONS"\nlisten = "127.0.0.1:{dimse}"\n'
            "accept_any_calling_ae = true\nmax_associations = 64\n"
            f'[web]\nlisten = "127.0.0.1:{web}"\n'
            # Nothing drains: the run measures Pons's DIMSE face alone.
            '[upstream]\nurl = "http://127.0.0.1:9/dicom-web"\n'
            f'[spool]\ndir = "{root}/spool"\n[jobs]\nurl = "sqlite://{root}/jobs.db"\n'
        )
    log = open(os.path.join(root, "pons.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--config", cfg], env=ENV, stdout=log, stderr=log)
    wait_port(dimse)
    return proc, dimse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pons")
    ap.add_argument("ct_dir")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attackers", type=int, default=32)
    args = ap.parse_args()
    files = sorted(
        os.path.join(args.ct_dir, f) for f in os.listdir(args.ct_dir) if f.endswith(".dcm")
    )[: args.n]
    mb = sum(os.path.getsize(f) for f in files) / 1e6

    def runs(port, work):
        return [run_storescu(port, "PONS", [files], work) for _ in range(args.reps)]

    with tempfile.TemporaryDirectory() as root:
        proc, port = start_pons(args.pons, root)
        try:
            quiet = runs(port, root)
            stop = threading.Event()
            counts = {"aborted": 0, "refused": 0, "other": 0, "error": 0}
            threads = [
                threading.Thread(target=attacker, args=(port, stop, counts), daemon=True)
                for _ in range(args.attackers)
            ]
            for t in threads:
                t.start()
            time.sleep(1)
            hostile = runs(port, root)
            stop.set()
            for t in threads:
                t.join()
            peak = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
    q, h = statistics.median(quiet), statistics.median(hostile)
    print(f"\nHostile input: storescu of {len(files)} CT ({mb:.0f} MB) into Pons, median of {args.reps}")
    print(f"| run | seconds | MB/s | ratio |")
    print(f"|---|---|---|---|")
    print(f"| alone | {q:.2f} | {mb / q:.0f} | 1.00 |")
    print(f"| with {args.attackers} hostile connections | {h:.2f} | {mb / h:.0f} | {q / h:.2f} |")
    print(
        f"attacks: {counts['aborted']} aborted, {counts['refused']} refused, "
        f"{counts['other']} other, {counts['error']} errors; Pons peak RSS {peak:.0f} MB"
    )
    if counts["other"] or counts["error"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
