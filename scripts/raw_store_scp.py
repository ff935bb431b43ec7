#!/usr/bin/env python3
"""A C-STORE SCP that keeps the data set bytes exactly as they came.

  raw_store_scp.py PORT OUTDIR

Accepts every storage SOP class in every transfer syntax pynetdicom knows,
and writes each received data set, undecoded, to OUTDIR/<SOP Instance
UID>.raw. DCMTK's storescp and Orthanc both drop group lengths when they
write, so neither can show that a sender changed nothing. Prints "ready"
once listening.
"""

import sys
import time
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt


def main():
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)

    def on_store(event):
        uid = event.request.AffectedSOPInstanceUID
        (out / f"{uid}.raw").write_bytes(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="RAW")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = 0
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
