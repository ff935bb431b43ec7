#!/usr/bin/env python3
"""A Study Root C-FIND SCP that misbehaves on purpose, for the QIDO-RS tests.

  find_scp.py PORT MODE
    MODE many     answer 1000 studies, 5 ms apart, honouring C-CANCEL;
                  prints "cancelled after N" or "sent all N"
    MODE refuse   answer A700 with an Error Comment at once
    MODE midway   answer 3 studies, then C000 with an Error Comment

Prints "ready" once listening. AE title FAKEPACS, any caller accepted.
"""

import sys
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind


def study(i):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.998.{i + 1}"
    ds.PatientID = "FAKE"
    return ds


def failure(code, comment):
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment
    return status


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]

    def handle_find(event):
        if mode == "refuse":
            yield failure(0xA700, "no room for queries today"), None
            return
        total = 1000 if mode == "many" else 3
        for i in range(total):
            if event.is_cancelled:
                print(f"cancelled after {i}", flush=True)
                yield 0xFE00, None
                return
            yield 0xFF00, study(i)
            if mode == "many":
                time.sleep(0.005)
        if mode == "midway":
            yield failure(0xC000, "index went away"), None
            return
        print(f"sent all {total}", flush=True)

    ae = AE(ae_title="FAKEPACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, handle_find)]
    )
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
