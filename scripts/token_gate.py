#!/usr/bin/env python3
"""An OAuth2 token endpoint and a DICOMweb origin that demands its tokens,
for the upstream-authentication tests (Orthanc checks no tokens).

  token_gate.py PORT UPSTREAM_ROOT CLIENT_SECRET LIFETIME_SECS

POST /token      client credentials (HTTP Basic or form) or a Google-style
                 JWT-bearer assertion; a wrong secret gets 401
                 invalid_client. Tokens live LIFETIME_SECS.
POST /revoke     every token issued so far stops working (the next use
                 gets 401), as when an archive rotates its keys.
GET  /stats      {"issued", "refused", "unauthorized", "assertions"} as JSON.
anything else    with a live bearer token: relayed to UPSTREAM_ROOT (e.g.
                 Orthanc's http://127.0.0.1:8042) with the same path;
                 without one: 401.

Prints "ready" once listening.
"""

import base64
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PORT, UPSTREAM, SECRET, LIFETIME = (
    int(sys.argv[1]),
    sys.argv[2].rstrip("/"),
    sys.argv[3],
    float(sys.argv[4]),
)
lock = threading.Lock()
tokens = {}  # token -> expiry
stats = {"issued": 0, "refused": 0, "unauthorized": 0, "assertions": []}


def claims_of(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        if self.path == "/token":
            return self.token()
        if self.path == "/revoke":
            self.body()
            with lock:
                tokens.clear()
            return self.answer(200, {})
        self.relay("POST")

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.answer(200, stats)
        self.relay("GET")

    def token(self):
        form = urllib.parse.parse_qs(self.body().decode())
        grant = form.get("grant_type", [""])[0]
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            claims = claims_of(form["assertion"][0])
            with lock:
                stats["assertions"].append(claims)
        else:
            secret = form.get("client_secret", [None])[0]
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user_pass = base64.b64decode(auth[6:]).decode()
                secret = urllib.parse.unquote_plus(user_pass.split(":", 1)[1])
            if grant != "client_credentials" or secret != SECRET:
                with lock:
                    stats["refused"] += 1
                return self.answer(
                    401,
                    {"error": "invalid_client", "error_description": "client authentication failed"},
                )
        with lock:
            stats["issued"] += 1
            token = f"tok-{stats['issued']}"
            tokens[token] = time.monotonic() + LIFETIME
        self.answer(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": int(LIFETIME)},
        )

    def relay(self, method):
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        body = self.body() if method == "POST" else None
        with lock:
            live = token in tokens and tokens[token] > time.monotonic()
            if not live:
                stats["unauthorized"] += 1
        if not live:
            return self.answer(
                401,
                b"token missing, expired or revoked\n",
                "text/plain",
                [("WWW-Authenticate", 'Bearer error="invalid_token"')],
            )
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() in ("accept", "content-type")
        }
        req = urllib.request.Request(UPSTREAM + self.path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as rsp:
                code, data, ctype = rsp.status, rsp.read(), rsp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            code, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "text/plain")
        self.answer(code, data, ctype)


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
