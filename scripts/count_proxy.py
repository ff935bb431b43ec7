#!/usr/bin/env python3
"""A TCP relay that counts what the server sends, for tests that must tell
how much work a peer did (e.g. how many times a study left the PACS).

  count_proxy.py LISTEN_PORT TARGET_PORT COUNT_FILE

Relays every connection to 127.0.0.1:TARGET_PORT. COUNT_FILE holds the
bytes sent by the target so far, and is rewritten as they pass. Prints
"ready" once listening.
"""

import os
import socket
import sys
import threading

LISTEN, TARGET, COUNT_FILE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
total = 0


def record(n):
    global total
    with lock:
        total += n
        tmp = COUNT_FILE + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(total))
        os.replace(tmp, COUNT_FILE)


def pipe(src, dst, counted):
    try:
        while True:
            data = src.recv(262144)
            if not data:
                break
            dst.sendall(data)
            if counted:
                record(len(data))
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(client):
    upstream = socket.create_connection(("127.0.0.1", TARGET))
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=pipe, args=(client, upstream, False), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client, True), daemon=True).start()


def main():
    record(0)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", LISTEN))
    listener.listen(64)
    print("ready", flush=True)
    while True:
        client, _ = listener.accept()
        serve(client)


if __name__ == "__main__":
    main()
