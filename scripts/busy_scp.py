#!/usr/bin/env python3
"""A Study Root C-FIND SCP with few association slots and slow answers, for
the tests of Pons's association pool and shared queries.

  busy_scp.py PORT MAX_ASSOCIATIONS DELAY_SECONDS

Answers every C-FIND with 5 studies, after DELAY_SECONDS. Takes at most
MAX_ASSOCIATIONS associations at once and refuses more with A-ASSOCIATE-RJ
(transient, local limit exceeded), as pynetdicom does. Prints "ready" once
listening, "associated" for each association it accepts, "find" for each
C-FIND, and "rejected" for each refused association. AE title BUSYPACS, any caller accepted.
"""

import sys
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind


def study(i):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.997.{i + 1}"
    ds.PatientID = "BUSY"
    return ds


PRINT = threading.Lock()


def say(line):
    """One whole line: handlers run on threads of their own."""
    with PRINT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main():
    port, limit, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

    def handle_find(event):
        say("find")
        time.sleep(delay)
        for i in range(5):
            yield 0xFF00, study(i)

    def handle_rejected(event):
        say("rejected")

    def handle_accepted(event):
        say("associated")

    ae = AE(ae_title="BUSYPACS")
    ae.maximum_associations = limit
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[
            (evt.EVT_C_FIND, handle_find),
            (evt.EVT_REJECTED, handle_rejected),
            (evt.EVT_ACCEPTED, handle_accepted),
        ],
    )
    say("ready")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
