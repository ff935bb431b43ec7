#!/usr/bin/env python3
"""A scripted storage commitment SCP (pynetdicom), for the cases Orthanc
cannot produce: the N-EVENT-REPORT on the N-ACTION's own association, or on
a new association after a delay (long enough to restart the requester).

  commit_scp.py PORT --ae AE --report same|new [--delay SECS]
                [--peer AE@HOST:PORT] [--missing UID ...]

Answers N-ACTION at once with Success, then reports: every referenced
instance committed except the --missing ones (Failure Reason 0x0112).
`same`: on the N-ACTION association, `new`: on a new association to --peer,
proposing the SCP role for Storage Commitment. Prints "ready" when
listening, then one JSON line per report sent: {"via", "status"}.
"""

import argparse
import json
import sys
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"


def event_information(request, missing):
    info = Dataset()
    info.TransactionUID = request.TransactionUID
    ok, failed = [], []
    for item in request.ReferencedSOPSequence:
        ref = Dataset()
        ref.ReferencedSOPClassUID = item.ReferencedSOPClassUID
        ref.ReferencedSOPInstanceUID = item.ReferencedSOPInstanceUID
        if str(item.ReferencedSOPInstanceUID) in missing:
            ref.FailureReason = 0x0112
            failed.append(ref)
        else:
            ok.append(ref)
    if ok:
        info.ReferencedSOPSequence = ok
    if failed:
        info.FailedSOPSequence = failed
    return info, (2 if failed else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", type=int)
    p.add_argument("--ae", default="FAKEPACS")
    p.add_argument("--report", choices=["same", "new"], required=True)
    p.add_argument("--delay", type=float, default=0.2)
    p.add_argument("--peer")
    p.add_argument("--missing", nargs="*", default=[])
    args = p.parse_args()
    missing = set(args.missing)

    def report(assoc, info, event_type, via):
        status, _ = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        code = int(status.Status) if status is not None and "Status" in status else None
        print(json.dumps({"via": via, "status": code}), flush=True)

    def later(event, request):
        info, event_type = event_information(request, missing)
        time.sleep(args.delay)
        if args.report == "same":
            report(event.assoc, info, event_type, "same")
            return
        title, _, address = args.peer.partition("@")
        host, _, port = address.rpartition(":")
        ae = AE(ae_title=args.ae)
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        for _ in range(60):  # the requester may be restarting
            assoc = ae.associate(host, int(port), ae_title=title, ext_neg=[role])
            if assoc.is_established:
                report(assoc, info, event_type, "new")
                assoc.release()
                return
            time.sleep(0.5)
        print(json.dumps({"via": "new", "status": None}), flush=True)

    def on_action(event):
        request = event.action_information
        threading.Thread(target=later, args=(event, request), daemon=True).start()
        return 0x0000, None

    ae = AE(ae_title=args.ae)
    ae.add_supported_context(StorageCommitmentPushModel)
    ae.start_server(("127.0.0.1", args.port), block=False,
                    evt_handlers=[(evt.EVT_N_ACTION, on_action)])
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin or kills us
    return 0


if __name__ == "__main__":
    sys.exit(main())
