#!/usr/bin/env python3
"""Ingest benchmark: DCMTK storescu of N CT-like instances (~0.5 MB each)

  (a) straight into a DCMTK storescp writing to disk (the direct path);
  (b) through Pons in spool mode, until the last C-STORE-RSP;
  (c) end to end, until every instance is in the archive (Orthanc DICOMweb);
  (d) end to end into a minimal STOW-RS sink (Orthanc's ingest caps (c)).

each with 1 and with 4 parallel associations. Prints a table. Run it through
bench/run.sh, which installs the peers and builds Pons in release mode.
"""

import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ENV = dict(os.environ, TCP_NODELAY="1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def split(files, n):
    return [files[i::n] for i in range(n)]


def run_storescu(port, called, groups, workdir):
    """Run one storescu per group at once; return wall seconds."""
    procs = []
    start = time.time()
    for i, group in enumerate(groups):
        listfile = os.path.join(workdir, f"files{i}.txt")
        with open(listfile, "w") as f:
            f.write("\n".join(group))
        # storescu takes files on the command line; xargs keeps it in one association.
        cmd = f"xargs -a {listfile} storescu -aet BENCH -aec {called} 127.0.0.1 {port}"
        procs.append(subprocess.Popen(cmd, shell=True, env=ENV, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"storescu failed: {err.decode()[-2000:]}")
    return time.time() - start


class Orthanc:
    def __init__(self, root):
        self.http = free_port()
        self.dicom = free_port()
        self.dir = os.path.join(root, "orthanc")
        os.makedirs(self.dir, exist_ok=True)
        cfg = {
            "Name": "bench", "StorageDirectory": self.dir, "IndexDirectory": self.dir,
            "HttpPort": self.http, "DicomPort": self.dicom, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "ConcurrentJobs": 2,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path = os.path.join(root, "orthanc.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.proc = subprocess.Popen(["Orthanc", path], env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.http)

    def count(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/statistics") as r:
            return json.load(r)["CountInstances"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Sink(http.server.BaseHTTPRequestHandler):
    """A STOW-RS origin that reads and discards the body, answering 200."""
    protocol_version = "HTTP/1.1"
    received = 0
    lock = threading.Lock()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                self._discard(size)
                self.rfile.readline()
                if size == 0:
                    break
        else:
            self._discard(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _discard(self, n):
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 20))
            if not chunk:
                break
            n -= len(chunk)

    def log_message(self, *args):
        pass


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class Pons:
    def __init__(self, binary, root, upstream, name, extra="", dimse=None):
        self.dimse = dimse or free_port()
        self.web = free_port()
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        cfg = f"""
[dimse]
ae_title = "PONS"
listen = "127.0.0.1:{self.dimse}"
accept_any_calling_ae = true
[web]
listen = "127.0.0.1:{self.web}"
[upstream]
url = "{upstream}"
[spool]
mode = "spool"
dir = "{self.dir}/spool"
[jobs]
url = "sqlite://{self.dir}/jobs.db"
{extra}"""
        path = os.path.join(self.dir, "pons.toml")
        with open(path, "w") as f:
            f.write(cfg)
        self.log = open(os.path.join(self.dir, "pons.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "--config", path],
                                     env=dict(ENV, RUST_LOG="warn"), stderr=self.log)
        wait_port(self.dimse)

    def spooled(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/readyz") as r:
            return json.load(r)["spooled_instances"]

    def stop(self):
        rss = peak_rss_mb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()
        return rss


def wait_until(pred, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit("timed out waiting for delivery")


def main():
    binary, data_dir = sys.argv[1], sys.argv[2]
    files = sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir) if f.endswith(".dcm"))
    n = len(files)
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    rows = []
    for assocs in (1, 4):
        groups = split(files, assocs)
        with tempfile.TemporaryDirectory(dir=os.environ.get("PONS_BENCH_TMP")) as root:
            # (a) direct: storescp writing every instance to disk.
            port = free_port()
            out = os.path.join(root, "storescp")
            os.makedirs(out)
            scp = subprocess.Popen(["storescp", "--fork", "-aet", "SINK", "-od", out, str(port)],
                                   env=ENV, stderr=subprocess.DEVNULL)
            wait_port(port)
            t_a = run_storescu(port, "SINK", groups, root)
            scp.terminate()
            scp.wait()
            assert len(os.listdir(out)) == n, "storescp did not write every instance"

            # (b) and (c): Pons in spool mode in front of Orthanc.
            orthanc = Orthanc(root)
            pons = Pons(binary, root, f"http://127.0.0.1:{orthanc.http}/dicom-web", "pons-orthanc")
            start = time.time()
            t_b = run_storescu(pons.dimse, "PONS", groups, root)
            wait_until(lambda: orthanc.count() >= n)
            t_c = time.time() - start
            rss_c = pons.stop()
            orthanc.stop()

            # (d): Pons in front of a sink that only reads the bytes.
            sink = ThreadingServer(("127.0.0.1", 0), Sink)
            threading.Thread(target=sink.serve_forever, daemon=True).start()
            pons = Pons(binary, root, f"http://127.0.0.1:{sink.server_address[1]}/dicom-web", "pons-sink")
            start = time.time()
            t_b2 = run_storescu(pons.dimse, "PONS", groups, root)
            wait_until(lambda: pons.spooled() == 0)
            t_d = time.time() - start
            rss_d = pons.stop()
            sink.shutdown()
        rows.append((assocs, t_a, t_b, t_c, t_b2, t_d, max(rss_c, rss_d)))

    print(f"\nIngest of {n} instances, {mb:.0f} MB, storescu -> ...\n")
    head = ("assocs", "path", "seconds", "inst/s", "MB/s", "vs direct", "Pons peak RSS")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for assocs, t_a, t_b, t_c, t_b2, t_d, rss in rows:
        for name, t, show_rss in (
            ("(a) storescp to disk (direct)", t_a, False),
            ("(b) Pons spool, last C-STORE-RSP (Orthanc upstream)", t_b, True),
            ("(b') Pons spool, last C-STORE-RSP (sink upstream)", t_b2, True),
            ("(c) end to end, all in Orthanc", t_c, True),
            ("(d) end to end, all in STOW sink", t_d, True),
        ):
            print(f"| {assocs} | {name} | {t:.2f} | {n / t:.0f} | {mb / t:.0f} | "
                  f"{t_a / t:.2f} | {f'{rss:.0f} MB' if show_rss else '-'} |")
    print("\n'vs direct' is (a)'s time over this path's time: 1.00 means as fast as storescp.")


if __name__ == "__main__":
    main()
