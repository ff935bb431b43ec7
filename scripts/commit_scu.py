#!/usr/bin/env python3
"""A storage commitment SCU (Push Model) with pynetdicom, for tests and benches.

  commit_scu.py request HOST PORT REFS [options]
      Sends N-ACTION (Action Type 1) for the instances in REFS (a JSON file:
      [[sop_class_uid, sop_instance_uid], ...]) and waits for the
      N-EVENT-REPORT, then prints one JSON line:
        {"status": N-ACTION-RSP status, "error_comment": str|null,
         "reports": [report, ...], "seconds": from N-ACTION to the first report}
      --txn UID          Transaction UID (default: a new one)
      --calling AE       our AE title (default MODALITY); --called AE (PONS)
      --wait SECS        how long to wait for a report (default 30; 0: not at all)
      --release          release the association right after N-ACTION-RSP
                         (the report must then come on a new association)
      --listen PORT      also accept reports on a new association at PORT
                         (proposed with the SCP role for Storage Commitment)
      --role-selection   propose SCP/SCU Role Selection for Storage Commitment
                         (both roles) on the N-ACTION association; prints the
                         roles the acceptor granted as "roles": [scu, scp]

  commit_scu.py listen PORT [--ae AE] [--wait SECS] [--count N]
      Only accept N-EVENT-REPORTs on new associations until N arrived (default
      1) or SECS passed; prints "ready" when listening, then the JSON line
      {"reports": [...]}.

A report: {"via": "same"|"new", "event_type": 1|2, "transaction_uid": UID,
"committed": [[class, uid], ...], "failed": [[class, uid, reason], ...],
"calling_ae": the AE that sent it}.
"""

import argparse
import json
import sys
import threading
import time

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"


class Inbox:
    """Reports as they arrive, from any thread."""

    def __init__(self):
        self.reports = []
        self.responses_sent = 0
        self.cond = threading.Condition()

    def on_sent(self, event):
        # The report's handler runs before its N-EVENT-REPORT-RSP goes out.
        if type(event.message).__name__ == "N_EVENT_REPORT_RSP":
            with self.cond:
                self.responses_sent += 1
                self.cond.notify_all()

    def wait_responses_sent(self, count, secs):
        deadline = time.monotonic() + secs
        with self.cond:
            while self.responses_sent < count and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())

    def handler(self, via):
        def on_report(event):
            info = event.event_information
            report = {
                "via": via,
                "event_type": int(event.request.EventTypeID),
                "transaction_uid": str(info.get("TransactionUID", "")),
                "committed": [
                    [str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)]
                    for i in info.get("ReferencedSOPSequence", [])
                ],
                "failed": [
                    [
                        str(i.ReferencedSOPClassUID),
                        str(i.ReferencedSOPInstanceUID),
                        int(i.FailureReason),
                    ]
                    for i in info.get("FailedSOPSequence", [])
                ],
                "calling_ae": str(event.assoc.requestor.ae_title).strip(),
                "at": time.monotonic(),
            }
            with self.cond:
                self.reports.append(report)
                self.cond.notify_all()
            return 0x0000, None

        return on_report

    def wait(self, count, secs):
        deadline = time.monotonic() + secs
        with self.cond:
            while len(self.reports) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.reports)


def listener(ae_title, port, inbox):
    ae = AE(ae_title=ae_title)
    # Accept the SCP role the storage commitment SCP proposes for itself.
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    return ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, inbox.handler("new")), (evt.EVT_DIMSE_SENT, inbox.on_sent)],
    )


def request(args):
    with open(args.refs) as f:
        refs = json.load(f)
    inbox = Inbox()
    server = listener(args.calling, args.listen, inbox) if args.listen else None
    ds = Dataset()
    ds.TransactionUID = args.txn or generate_uid()
    items = []
    for cls, uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    ds.ReferencedSOPSequence = items

    ae = AE(ae_title=args.calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ext_neg = [build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)] if args.role_selection else []
    assoc = ae.associate(
        args.host,
        args.port,
        ae_title=args.called,
        ext_neg=ext_neg,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, inbox.handler("same")), (evt.EVT_DIMSE_SENT, inbox.on_sent)],
    )
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 1
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == StorageCommitmentPushModel)
    roles = [bool(cx.as_scu), bool(cx.as_scp)]
    started = time.monotonic()
    status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    out = {
        "roles": roles,
        "status": int(status.Status) if status is not None else None,
        "error_comment": str(status.get("ErrorComment")) if status is not None and "ErrorComment" in status else None,
    }
    ok = out["status"] == 0
    if args.release or not ok:
        assoc.release()
    reports = inbox.wait(1, args.wait) if ok and args.wait > 0 else []
    if assoc.is_established:
        # Releasing before our N-EVENT-REPORT-RSP went out would close the
        # association under it, and the SCP would rightly count the report
        # as not delivered.
        inbox.wait_responses_sent(len(reports), 10)
        assoc.release()
    if server:
        server.shutdown()
    out["reports"] = reports
    out["seconds"] = round(reports[0]["at"] - started, 3) if reports else None
    print(json.dumps(out))
    return 0


def listen(args):
    inbox = Inbox()
    server = listener(args.ae, args.port, inbox)
    print("ready", flush=True)
    reports = inbox.wait(args.count, args.wait)
    # Let the last response go out and its association be released before
    # the server goes.
    inbox.wait_responses_sent(len(reports), 10)
    deadline = time.monotonic() + 5
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    server.shutdown()
    print(json.dumps({"reports": reports}), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("request")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("refs")
    r.add_argument("--txn")
    r.add_argument("--calling", default="MODALITY")
    r.add_argument("--called", default="PONS")
    r.add_argument("--wait", type=float, default=30)
    r.add_argument("--release", action="store_true")
    r.add_argument("--listen", type=int)
    r.add_argument("--role-selection", action="store_true")
    l = sub.add_parser("listen")
    l.add_argument("port", type=int)
    l.add_argument("--ae", default="MODALITY")
    l.add_argument("--wait", type=float, default=60)
    l.add_argument("--count", type=int, default=1)
    args = p.parse_args()
    return request(args) if args.cmd == "request" else listen(args)


if __name__ == "__main__":
    sys.exit(main())
