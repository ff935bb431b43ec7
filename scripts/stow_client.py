#!/usr/bin/env python3
"""STOW-RS with dicomweb-client, the client real applications use.

  stow_client.py URL [--study UID] FILE...

Reads each FILE with pydicom and stores them all in one request with
DICOMwebClient(URL).store_instances (to URL/studies, or URL/studies/UID).
Prints one JSON object: the HTTP status and the response body as DICOM JSON
(null when there is none).
"""

import argparse
import json
import sys

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--study")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    statuses = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: statuses.append(r.status_code))
    client = DICOMwebClient(url=args.url, session=session)
    datasets = [pydicom.dcmread(f) for f in args.files]
    try:
        result = client.store_instances(datasets, study_instance_uid=args.study)
        body = result.to_json_dict() if len(result) else None
    except requests.HTTPError as e:
        try:
            body = e.response.json()
        except ValueError:
            body = {"text": e.response.text}
    print(json.dumps({"status": statuses[-1] if statuses else None, "response": body}))


if __name__ == "__main__":
    sys.exit(main())
