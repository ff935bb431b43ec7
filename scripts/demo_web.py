#!/usr/bin/env python3
"""Direction B of the demo: a DICOMweb application (dicomweb-client, what real
Python apps use) stores, searches and retrieves through Pons's DICOMweb face,
while the images live in a DIMSE-only PACS.

    dicomweb-client --STOW-RS--> pons --C-STORE--> PACS
                    --QIDO-RS--> pons --C-FIND---> PACS
                    --WADO-RS--> pons --C-GET----> PACS  (study, metadata, rendered)
                    --POST /commitment-requests--> pons --N-ACTION--> PACS
                                                   pons <-N-EVENT-REPORT-- PACS

Usage: demo_web.py PONS_DICOMWEB_URL PACS_REST_URL OUT_DIR FILE...
Prints what happened; exits non-zero when anything is missing or different.
"""

import json
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
from dicomweb_client.api import DICOMwebClient


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def pacs_instance_count(rest: str) -> int:
    with urllib.request.urlopen(f"{rest}/statistics", timeout=10) as r:
        return int(json.load(r)["CountInstances"])


def commitment(url: str, uid: str, refs) -> dict:
    """POST a storage commitment request, then GET until the PACS settled it."""
    body = {"00081199": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": [str(c)]}, "00081155": {"vr": "UI", "Value": [str(i)]}}
        for c, i in refs]}}
    target = f"{url}/commitment-requests/{uid}"
    req = urllib.request.Request(target, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        status, text = r.status, r.read()
    deadline = time.monotonic() + 60
    while status == 202 and time.monotonic() < deadline:
        time.sleep(float(r.headers.get("Retry-After", "1")))
        with urllib.request.urlopen(target, timeout=30) as r:
            status, text = r.status, r.read()
    return json.loads(text) if status == 200 else {}


def elements(ds) -> dict:
    """A data set as comparable values, without the file meta group."""
    return {e.tag: e.value for e in ds if e.tag.group != 0x0002}


def main() -> int:
    url, rest, out, files = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    out.mkdir(parents=True, exist_ok=True)
    client = DICOMwebClient(url)
    datasets = [pydicom.dcmread(f) for f in files]
    study = datasets[0].StudyInstanceUID
    patient = datasets[0].PatientID
    lines = []

    say(f"STOW-RS of {len(datasets)} instances to Pons (-> C-STORE into the PACS)")
    t0 = time.monotonic()
    client.store_instances(datasets=datasets, study_instance_uid=study)
    stow_s = time.monotonic() - t0
    held = pacs_instance_count(rest)
    if held != len(datasets):
        say(f"the PACS holds {held} instances, expected {len(datasets)}")
        return 1
    lines.append(f"STOW-RS -> C-STORE:      {held} instances in the PACS after {stow_s:.2f} s")

    say(f"QIDO-RS /studies?PatientID={patient} (-> C-FIND)")
    t0 = time.monotonic()
    studies = client.search_for_studies(search_filters={"PatientID": patient})
    qido_s = time.monotonic() - t0
    found = [s["0020000D"]["Value"][0] for s in studies]
    if found != [study]:
        say(f"QIDO found {found}, expected [{study}]")
        return 1
    series = client.search_for_series(study_instance_uid=study)
    lines.append(
        f"QIDO-RS -> C-FIND:       1 study ({len(series)} series) in {qido_s:.2f} s"
    )

    say(f"WADO-RS study {study} (-> C-GET)")
    t0 = time.monotonic()
    got = client.retrieve_study(study)
    wado_s = time.monotonic() - t0
    sent = {d.SOPInstanceUID: d for d in datasets}
    different = [
        d.SOPInstanceUID
        for d in got
        if d.SOPInstanceUID not in sent or elements(d) != elements(sent[d.SOPInstanceUID])
    ]
    if len(got) != len(datasets) or different:
        say(f"WADO-RS returned {len(got)} instances, {len(different)} unlike what was stored")
        return 1
    lines.append(
        f"WADO-RS -> C-GET:        {len(got)} instances, all equal to what was stored, in {wado_s:.2f} s"
    )

    metadata = client.retrieve_study_metadata(study)
    bulk = sum(1 for m in metadata if "BulkDataURI" in m.get("7FE00010", {}))
    lines.append(
        f"WADO-RS metadata:        {len(metadata)} instances, pixel data as BulkDataURI in {bulk}"
    )

    first = got[0]
    jpeg = client.retrieve_instance_rendered(
        study, first.SeriesInstanceUID, first.SOPInstanceUID, media_types=("image/jpeg",)
    )
    if jpeg[:2] != b"\xff\xd8":
        say("rendered is not a JPEG")
        return 1
    (out / "rendered.jpg").write_bytes(jpeg)
    lines.append(f"WADO-RS rendered:        {len(jpeg)} byte JPEG ({out / 'rendered.jpg'}, kept with KEEP=1)")

    say("storage commitment: POST /commitment-requests (-> N-ACTION to the PACS)")
    never = "1.2.826.0.1.3680043.10.1055.405"
    refs = [(d.SOPClassUID, d.SOPInstanceUID) for d in datasets] + [(datasets[0].SOPClassUID, never)]
    t0 = time.monotonic()
    result = commitment(url, "1.2.826.0.1.3680043.10.1055.406", refs)
    commit_s = time.monotonic() - t0
    committed = result.get("00081199", {}).get("Value", [])
    failed = result.get("00081198", {}).get("Value", [])
    reasons = {f["00081197"]["Value"][0] for f in failed}
    if len(committed) != len(datasets) or len(failed) != 1 or reasons != {0x0112}:
        say(f"commitment result unexpected: {json.dumps(result)[:400]}")
        return 1
    lines.append(
        f"commitment -> N-ACTION:  {len(committed)} committed, 1 failed (0112 no such instance) in {commit_s:.2f} s"
    )

    print("\nPons demo, direction B (DICOMweb app -> Pons -> DIMSE PACS)")
    for line in lines:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
