#!/usr/bin/env python3
"""pynetdicom Query/Retrieve SCU for the cases DCMTK cannot produce.

  qr_client.py move HOST PORT CALLED DEST LEVEL UID
      C-MOVE one study (LEVEL STUDY) or instance (LEVEL IMAGE).
  qr_client.py move-cancel HOST PORT CALLED DEST STUDY_UID DELAY_S
      C-MOVE a study, send C-CANCEL after DELAY_S seconds.
  qr_client.py get-only-mr HOST PORT CALLED STUDY_UID
      C-GET a study while accepting only MR Image Storage back.

Prints the final response as JSON: status, counts, Error Comment, Failed SOP
Instance UID List.
"""

import json
import sys
import threading

from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pydicom.dataset import Dataset


def identifier(study_uid, level="STUDY"):
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    if level == "IMAGE":
        ds.SOPInstanceUID = study_uid
    else:
        ds.StudyInstanceUID = study_uid
    return ds


def final(responses):
    last = None
    for status, ds in responses:
        if status is not None:
            last = (status, ds)
    status, ds = last
    failed = []
    if ds is not None and "FailedSOPInstanceUIDList" in ds:
        v = ds.FailedSOPInstanceUIDList
        failed = [v] if isinstance(v, str) else list(v)
    return {
        "status": f"0x{status.Status:04X}",
        "completed": int(status.get("NumberOfCompletedSuboperations", 0)),
        "failed": int(status.get("NumberOfFailedSuboperations", 0)),
        "remaining": int(status.get("NumberOfRemainingSuboperations", 0) or 0),
        "comment": str(status.get("ErrorComment", "")),
        "failed_uids": failed,
    }


def main():
    cmd, host, port, called = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ae = AE(ae_title="MODALITY")
    if cmd == "move":
        dest, level, uid = sys.argv[5], sys.argv[6], sys.argv[7]
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(host, port, ae_title=called)
        assert assoc.is_established, "association refused"
        result = final(assoc.send_c_move(identifier(uid, level), dest,
                                         StudyRootQueryRetrieveInformationModelMove))
    elif cmd == "move-cancel":
        dest, study, delay = sys.argv[5], sys.argv[6], float(sys.argv[7])
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(host, port, ae_title=called)
        assert assoc.is_established, "association refused"
        cx = next(c for c in assoc.accepted_contexts
                  if c.abstract_syntax == StudyRootQueryRetrieveInformationModelMove)
        threading.Timer(delay, lambda: assoc.send_c_cancel(1, cx.context_id)).start()
        result = final(assoc.send_c_move(identifier(study), dest,
                                         StudyRootQueryRetrieveInformationModelMove, msg_id=1))
    elif cmd == "get-only-mr":
        study = sys.argv[5]
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(MRImageStorage)
        handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
        assoc = ae.associate(host, port, ae_title=called,
                             ext_neg=[build_role(MRImageStorage, scp_role=True)],
                             evt_handlers=handlers)
        assert assoc.is_established, "association refused"
        result = final(assoc.send_c_get(identifier(study), StudyRootQueryRetrieveInformationModelGet))
    else:
        raise SystemExit(__doc__)
    assoc.release()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
