#!/usr/bin/env python3
"""Small launcher and helpers for Pons's real peers (used by scripts/demo.sh).

    peers.py orthanc --dir DIR [--aet AET] [--modality AET@HOST:PORT ...] [--worklists DIR]
        Starts a private Orthanc (DICOMweb plugin at /dicom-web/) on free
        127.0.0.1 ports with storage under DIR, TCP_NODELAY=1. When it answers,
        writes DIR/ready.env (ORTHANC_HTTP_PORT, ORTHANC_DICOM_PORT,
        ORTHANC_AET, ORTHANC_REST, ORTHANC_DICOMWEB) and prints it. Stays in
        the foreground; SIGTERM/SIGINT stop Orthanc. Orthanc's log:
        DIR/orthanc.log.
    peers.py free-ports N             print N free TCP ports on 127.0.0.1
    peers.py wait-tcp PORT [--timeout S] [--pid PID]
        wait until 127.0.0.1:PORT accepts TCP (fail early if PID exits)
    peers.py wait-instances REST_URL N [--timeout S]
        poll Orthanc's /statistics until it holds N instances; print the count
    peers.py storescu-config FILE...  print a DCMTK storescu config (profile
        "Default") proposing each file's (SOP class, transfer syntax) pair as
        its own presentation context, so storescu sends every file unchanged

Stdlib only, except storescu-config (pydicom; run with the venv python).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
WORKLIST_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when this launcher dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def http_get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def cmd_orthanc(args) -> int:
    if shutil.which("Orthanc") is None or not Path(DICOMWEB_PLUGIN).exists():
        print("peers: Orthanc or its DICOMweb plugin missing; run scripts/install-deps.sh",
              file=sys.stderr)
        return 1
    d = Path(args.dir).resolve()
    storage = d / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_ports(2)
    modalities = {}
    for m in args.modality:
        aet, _, addr = m.partition("@")
        host, _, port = addr.rpartition(":")
        modalities[aet] = [aet, host or "127.0.0.1", int(port)]
    config = {
        "Name": f"pons-demo-{dicom_port}",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": args.aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "DicomModalities": modalities,
        "StableAge": 1,
        "SaveJobs": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    if args.worklists:
        # Orthanc's own worklist plugin answers MWL C-FIND from *.wl files.
        config["Plugins"].append(WORKLIST_PLUGIN)
        config["Worklists"] = {"Enable": True, "Database": str(Path(args.worklists).resolve())}
        config["DicomAlwaysAllowFindWorklist"] = True
    (d / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(d / "orthanc.log", "ab")
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(
        ["Orthanc", str(d / "orthanc.json")], cwd=d, env=env,
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent,
    )

    stopping = False

    def stop(*_):
        # Only signal here: Popen.wait() in a signal handler can deadlock on
        # the wait lock the interrupted main-thread wait() holds.
        nonlocal stopping
        stopping = True
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        signal.signal(signal.SIGALRM, lambda *_: os.kill(proc.pid, signal.SIGKILL))
        signal.alarm(10)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    rest = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + args.timeout
    while True:
        if stopping:
            proc.wait()
            return 0
        if proc.poll() is not None:
            print(f"peers: Orthanc exited ({proc.returncode}); see {d / 'orthanc.log'}",
                  file=sys.stderr)
            return 1
        try:
            http_get_json(f"{rest}/system", timeout=1)
            with socket.create_connection(("127.0.0.1", dicom_port), timeout=1):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            print(f"peers: Orthanc did not answer within {args.timeout} s; see "
                  f"{d / 'orthanc.log'}", file=sys.stderr)
            proc.kill()
            proc.wait()
            return 1
        time.sleep(0.1)

    env_text = (
        f"ORTHANC_HTTP_PORT={http_port}\n"
        f"ORTHANC_DICOM_PORT={dicom_port}\n"
        f"ORTHANC_AET={args.aet}\n"
        f"ORTHANC_REST={rest}\n"
        f"ORTHANC_DICOMWEB={rest}/dicom-web\n"
    )
    tmp = d / "ready.env.tmp"
    tmp.write_text(env_text)
    tmp.rename(d / "ready.env")
    print(env_text, end="", flush=True)
    proc.wait()
    return 0 if stopping else proc.returncode


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmd_wait_tcp(args) -> int:
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if args.pid and not alive(args.pid):
            print(f"peers: process {args.pid} exited before 127.0.0.1:{args.port} "
                  "accepted TCP", file=sys.stderr)
            return 1
        try:
            with socket.create_connection(("127.0.0.1", args.port), timeout=0.5):
                return 0
        except OSError:
            time.sleep(0.05)
    print(f"peers: nothing accepts TCP on 127.0.0.1:{args.port} after {args.timeout} s",
          file=sys.stderr)
    return 1


def cmd_wait_instances(args) -> int:
    deadline = time.monotonic() + args.timeout
    count = -1
    while True:
        try:
            count = http_get_json(f"{args.rest_url}/statistics")["CountInstances"]
        except (OSError, ValueError, KeyError):
            pass
        if count >= args.n or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(count)
    return 0 if count >= args.n else 1


def cmd_storescu_config(args) -> int:
    import pydicom  # venv only

    pairs: list[tuple[str, str]] = []
    for f in args.files:
        meta = pydicom.filereader.read_file_meta_info(f)
        pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        if pair not in pairs:
            pairs.append(pair)
    if len(pairs) > 127:
        print("peers: more than 127 (SOP class, transfer syntax) pairs", file=sys.stderr)
        return 1
    syntaxes = sorted({ts for _, ts in pairs})
    out = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        out += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    out += ["", "[[PresentationContexts]]", "[Contexts]"]
    for i, (cls, ts) in enumerate(pairs):
        out.append(f"PresentationContext{i + 1} = {cls}\\TS{syntaxes.index(ts)}")
    out += ["", "[[Profiles]]", "[Default]", "PresentationContexts = Contexts"]
    print("\n".join(out))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("orthanc")
    p.add_argument("--dir", required=True)
    p.add_argument("--aet", default="ORTHANC")
    p.add_argument("--modality", action="append", default=[], metavar="AET@HOST:PORT")
    p.add_argument("--worklists", metavar="DIR", help="serve MWL C-FIND from DIR/*.wl")
    p.add_argument("--timeout", type=float, default=30)
    p.set_defaults(fn=cmd_orthanc)
    p = sub.add_parser("free-ports")
    p.add_argument("n", type=int, nargs="?", default=1)
    p.set_defaults(fn=lambda a: print(" ".join(map(str, free_ports(a.n)))) or 0)
    p = sub.add_parser("wait-tcp")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--pid", type=int, help="fail early when this process is gone")
    p.set_defaults(fn=cmd_wait_tcp)
    p = sub.add_parser("wait-instances")
    p.add_argument("rest_url")
    p.add_argument("n", type=int)
    p.add_argument("--timeout", type=float, default=120)
    p.set_defaults(fn=cmd_wait_instances)
    p = sub.add_parser("storescu-config")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_storescu_config)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
