#!/usr/bin/env python3
"""pynetdicom Modality Worklist SCU, as a modality asks for its worklist.

    mwl_client.py HOST PORT CALLED MODALITY STATION_AE DATE

Asks for the steps of that modality, station and date (empty arguments:
any), with the usual return keys. Prints one JSON line per match
(accession, patient name, modality, station AE, start date and time), then
{"status": final status}.
"""

import json
import sys

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

host, port, called, modality, station, date = sys.argv[1:7]

query = Dataset()
query.SpecificCharacterSet = "ISO_IR 192"
query.AccessionNumber = ""
query.PatientName = ""
query.PatientID = ""
query.StudyInstanceUID = ""
step = Dataset()
step.Modality = modality
step.ScheduledStationAETitle = station
step.ScheduledProcedureStepStartDate = date
step.ScheduledProcedureStepStartTime = ""
step.ScheduledProcedureStepID = ""
query.ScheduledProcedureStepSequence = [step]

ae = AE(ae_title="MODALITY")
ae.add_requested_context(ModalityWorklistInformationFind)
assoc = ae.associate(host, int(port), ae_title=called)
if not assoc.is_established:
    print(json.dumps({"status": "no association"}))
    sys.exit(1)
final = None
for status, found in assoc.send_c_find(query, ModalityWorklistInformationFind):
    if status is None:
        break
    final = status.Status
    if found is not None and status.Status in (0xFF00, 0xFF01):
        sps = found.ScheduledProcedureStepSequence[0]
        print(
            json.dumps(
                {
                    "accession": found.AccessionNumber,
                    "name": str(found.PatientName),
                    "modality": sps.Modality,
                    "station": sps.ScheduledStationAETitle,
                    "date": sps.ScheduledProcedureStepStartDate,
                    "time": sps.ScheduledProcedureStepStartTime,
                    "step_id": sps.ScheduledProcedureStepID,
                }
            ),
            flush=True,
        )
assoc.release()
print(json.dumps({"status": final}), flush=True)
