#!/usr/bin/env python3
"""A DICOMweb origin with a worklist, for tests and benchmarks (Orthanc has
no DICOMweb worklist).

    worklist_origin.py PORT mwl|ups ENTRIES.json

Serves GET /dicom-web/modality-scheduled-procedure-steps (mode mwl: the
Modality Worklist service, Supplement 246) or GET /dicom-web/workitems (mode
ups: UPS-RS search, each entry as a workitem); the other resource answers
404. ENTRIES.json is a list of objects with keys acc, pid, name, study,
modality, station, station_name, date, time, sps_id and, for UPS, state
(default SCHEDULED). Matching: every `Attribute` or `Sequence.Attribute`
parameter (by keyword), with wildcards, UID lists and DA/TM/DT ranges;
limit and offset page. ProcedureStepState is ignored (as by an origin that
cannot match it: Pons must keep the finished workitems out). Prints "ready", then one line per request (its path
and query), so that a test can check what it was asked.
"""

import http.server
import json
import socketserver
import sys
import urllib.parse

from pydicom.datadict import dictionary_VR, tag_for_keyword

PORT, MODE, ENTRIES = int(sys.argv[1]), sys.argv[2], sys.argv[3]
BASE = "/dicom-web"


def el(vr, *values):
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": v} for v in values]}
    return {"vr": vr, "Value": list(values)}


def code(value, scheme, meaning):
    return {"00080100": el("SH", value), "00080102": el("SH", scheme), "00080104": el("LO", meaning)}


def protocol(e):
    return code("P-" + e["modality"], "99HOSP", "Protocol " + e["modality"])


def as_mwl(e):
    return {
        "00080005": el("CS", "ISO_IR 192"),
        "00080050": el("SH", e["acc"]),
        "00100010": el("PN", e["name"]),
        "00100020": el("LO", e["pid"]),
        "0020000D": el("UI", e["study"]),
        "00321060": el("LO", "Procedure " + e["acc"]),
        "00401001": el("SH", "RP" + e["acc"]),
        "00400100": {
            "vr": "SQ",
            "Value": [
                {
                    "00080060": el("CS", e["modality"]),
                    "00400001": el("AE", e["station"]),
                    "00400010": el("SH", e["station_name"]),
                    "00400002": el("DA", e["date"]),
                    "00400003": el("TM", e["time"]),
                    "00400009": el("SH", e["sps_id"]),
                    "00400007": el("LO", "Step " + e["acc"]),
                    "00400008": {"vr": "SQ", "Value": [protocol(e)]},
                }
            ],
        },
    }


def as_ups(e):
    return {
        "00080016": el("UI", "1.2.840.10008.5.1.4.34.6.1"),
        "00080018": el("UI", "2.25.1" + "".join(str(ord(c)) for c in e["acc"])),
        "00741000": el("CS", e.get("state", "SCHEDULED")),
        "00741200": el("CS", "MEDIUM"),
        "00741204": el("LO", "Step " + e["acc"]),
        "00404005": el("DT", e["date"] + e["time"]),
        "00100010": el("PN", e["name"]),
        "00100020": el("LO", e["pid"]),
        "0040A370": {
            "vr": "SQ",
            "Value": [
                {
                    "00080050": el("SH", e["acc"]),
                    "0020000D": el("UI", e["study"]),
                    "00401001": el("SH", "RP" + e["acc"]),
                    "00321060": el("LO", "Procedure " + e["acc"]),
                }
            ],
        },
        "00404018": {"vr": "SQ", "Value": [protocol(e)]},
        "00404026": {"vr": "SQ", "Value": [code(e["modality"], "DCM", e["modality"])]},
        "00404025": {"vr": "SQ", "Value": [code(e["station"], "99HOSP", e["station_name"])]},
    }


with open(ENTRIES) as f:
    ENTRY_LIST = json.load(f)
# A worklist lists scheduled steps only; workitems in every state are kept.
if MODE == "mwl":
    ITEMS = [as_mwl(e) for e in ENTRY_LIST if e.get("state", "SCHEDULED") == "SCHEDULED"]
else:
    ITEMS = [as_ups(e) for e in ENTRY_LIST]
RESOURCE = BASE + ("/modality-scheduled-procedure-steps" if MODE == "mwl" else "/workitems")


def values(obj, tags):
    """Every value at the path (the last attribute inside any item)."""
    element = obj.get(tags[0])
    if element is None:
        return []
    if len(tags) > 1:
        return [v for item in element.get("Value", []) for v in values(item, tags[1:])]
    out = []
    for v in element.get("Value", []):
        out.append(v.get("Alphabetic", "") if isinstance(v, dict) else str(v))
    return out


def wildcard(pattern, value):
    if not pattern:
        return not value
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(wildcard(rest, value[i:]) for i in range(len(value) + 1))
    return bool(value) and (head == "?" or head == value[0]) and wildcard(rest, value[1:])


def in_range(pattern, value):
    digits = lambda s: "".join(c for c in s.split(".")[0] if c.isdigit())
    low, _, high = pattern.partition("-") if "-" in pattern else (pattern, "", pattern)
    width = max(len(digits(value)), len(digits(low)), len(digits(high)))
    v = digits(value).ljust(width, "0")
    return (not low or digits(low).ljust(width, "0") <= v) and (
        not high or v <= digits(high).ljust(width, "9")
    )


def matches(obj, key, pattern):
    tags = ["%08X" % tag_for_keyword(k) for k in key.split(".")]
    vr = dictionary_VR(key.split(".")[-1])
    found = values(obj, tags)
    if vr in ("DA", "TM", "DT"):
        return any(in_range(pattern, v) for v in found)
    if vr == "UI":
        return any(v in pattern.split(",") for v in found)
    if vr == "PN":
        return any(wildcard(pattern.lower(), v.lower()) for v in found)
    return any(wildcard(pattern, v) for v in found)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        print(f"GET {url.path}?{url.query}", flush=True)
        if url.path != RESOURCE:
            return self.answer(404, b'{"error": "no such resource"}')
        params = urllib.parse.parse_qsl(url.query)
        limit, offset, keys = 100, 0, []
        for k, v in params:
            if k == "limit":
                limit = int(v)
            elif k == "offset":
                offset = int(v)
            elif k not in ("includefield", "fuzzymatching", "ProcedureStepState"):
                try:
                    tag_for_keyword(k.split(".")[-1]) or 1 / 0
                except Exception:
                    return self.answer(400, json.dumps({"error": f"unknown {k}"}).encode())
                keys.append((k, v))
        found = [i for i in ITEMS if all(matches(i, k, v) for k, v in keys)]
        page = found[offset : offset + limit]
        self.answer(200 if page else 204, json.dumps(page).encode() if page else b"")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


server = Server(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
