#!/usr/bin/env python3
"""A TCP relay that misbehaves on its first connections, for fault tests
that no real peer can produce on demand.

  faulty_relay.py LISTEN_PORT TARGET_PORT slow TIMES
  faulty_relay.py LISTEN_PORT TARGET_PORT abort BYTES TIMES

slow:  the first TIMES connections pass the target's answer on at one
       byte per second (an origin that answers, but far too slowly).
abort: on the first TIMES connections whose DIMSE peer (the target) has
       sent more than BYTES, at the next PDU boundary both sides get an
       A-ABORT and the connection is closed (a PACS aborting mid-transfer).

Relays everything else to 127.0.0.1:TARGET_PORT unchanged. Prints "ready"
once listening and "faulted" each time it misbehaves.
"""

import socket
import sys
import threading
import time

LISTEN, TARGET, MODE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if MODE == "slow":
    BYTES, TIMES = 0, int(sys.argv[4])
else:
    BYTES, TIMES = int(sys.argv[4]), int(sys.argv[5])
A_ABORT = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0])
lock = threading.Lock()
faults_left = TIMES


def take_fault():
    global faults_left
    with lock:
        if faults_left <= 0:
            return False
        faults_left -= 1
    print("faulted", flush=True)
    return True


def close(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def client_to_target(client, target):
    try:
        while data := client.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    close(client, target)


def slow_answer(target, client):
    try:
        while data := target.recv(65536):
            for b in data:
                client.sendall(bytes([b]))
                time.sleep(1)
    except OSError:
        pass
    close(client, target)


def aborting_answer(target, client):
    """Relays whole PDUs; aborts at the first boundary past BYTES."""
    sent, buf, armed = 0, b"", True
    try:
        while data := target.recv(65536):
            buf += data
            while len(buf) >= 6:
                size = 6 + int.from_bytes(buf[2:6], "big")
                if len(buf) < size:
                    break
                if armed and sent > BYTES:
                    armed = False
                    if take_fault():
                        client.sendall(A_ABORT)
                        target.sendall(A_ABORT)
                        close(client, target)
                        return
                client.sendall(buf[:size])
                sent += size
                buf = buf[size:]
    except OSError:
        pass
    close(client, target)


def serve(client):
    target = socket.create_connection(("127.0.0.1", TARGET))
    for s in (client, target):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if MODE == "slow":
        answer = slow_answer if take_fault() else None
    else:
        answer = aborting_answer
    threading.Thread(target=client_to_target, args=(client, target), daemon=True).start()
    if answer is None:
        threading.Thread(target=client_to_target, args=(target, client), daemon=True).start()
    else:
        threading.Thread(target=answer, args=(target, client), daemon=True).start()


def main():
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
