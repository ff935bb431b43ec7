#!/usr/bin/env python3
"""A DICOMweb origin that fails one instance in its WADO-RS answers.

    faulty_origin.py PORT UPSTREAM_URL SOP_INSTANCE_UID drop|break

Forwards every GET to UPSTREAM_URL (e.g. http://127.0.0.1:8042/dicom-web)
and answers as the upstream did, except for multipart/related answers with a
part holding SOP_INSTANCE_UID: `drop` leaves that part out (QIDO-RS still
lists the instance, WADO-RS never delivers it); `break` sends that part first,
closes the connection nine tenths into it. For tests of a retrieve
that must fail exactly that instance. Prints "ready" once listening.
"""

import http.server
import re
import socket
import socketserver
import sys
import urllib.error
import urllib.request

PORT, UPSTREAM, UID, MODE = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3], sys.argv[4]
# The UID whole, not as the prefix of a longer one.
UID_RE = re.compile(re.escape(UID.encode()) + rb"(?![0-9.])")


def parts_of(body, content_type):
    """(delimiter, chunks) of a multipart body: preamble, parts..., epilogue."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return None, None
    delim = b"--" + m.group(1).encode()
    return delim, body.split(delim)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        origin = "/".join(UPSTREAM.split("/", 3)[:3])  # scheme://host:port
        accept = {k: v for k, v in self.headers.items() if k.lower() == "accept"}
        req = urllib.request.Request(origin + self.path, headers=accept)
        try:
            with urllib.request.urlopen(req) as r:
                status, headers, body = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        ctype = headers.get("Content-Type", "")
        cut = None
        if ctype.startswith("multipart/related"):
            delim, chunks = parts_of(body, ctype)
            if chunks:
                hit = [i for i, c in enumerate(chunks[1:-1], 1) if UID_RE.search(c)]
                if hit and MODE == "drop":
                    chunks = [c for i, c in enumerate(chunks) if i not in hit]
                    body = delim.join(chunks)
                elif hit and MODE == "break":
                    # That part first: the others then come after the break.
                    i = hit[0]
                    chunks.insert(1, chunks.pop(i))
                    body = delim.join(chunks)
                    cut = len(chunks[0]) + len(delim) + len(chunks[1]) * 9 // 10
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


if __name__ == "__main__":
    server = Server(("127.0.0.1", PORT), Handler)
    print("ready", flush=True)
    server.serve_forever()
