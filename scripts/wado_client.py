#!/usr/bin/env python3
"""WADO-RS through dicomweb-client, the client real applications use.

    wado_client.py BASE_URL OUT_DIR OP [ARGS...]

OPs (each writes under OUT_DIR, then prints a JSON summary on stdout):
  study S                 retrieve_study        -> OUT/study/{sop}.dcm
  series S SE             retrieve_series       -> OUT/series/{sop}.dcm
  instance S SE I [TS]    retrieve_instance     -> OUT/instance/{sop}.dcm
                          (TS: a transfer syntax to ask for, or '*')
  metadata S [SE [I]]     retrieve_*_metadata   -> OUT/metadata.json; for
                          instance metadata also the data set rebuilt from the
                          JSON with its bulk data fetched from the BulkDataURIs
                          -> OUT/rebuilt/{sop}.dcm

Files keep the transfer syntax each part came in (file meta from the part).
Run with the venv python made by scripts/install-deps.sh.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset


def save(ds: Dataset, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=False)
    return {
        "sop": str(ds.SOPInstanceUID),
        "ts": str(ds.file_meta.TransferSyntaxUID),
        "path": str(path),
    }


def rebuild(client: DICOMwebClient, md: dict, out: Path) -> dict:
    """The data set from its metadata, bulk data fetched by URI."""

    def bulk(tag: str, vr: str, uri: str) -> bytes:
        # dicomweb-client sends a Host header without the port, so absolute
        # URIs built from it name port 80: keep the path, use our server.
        base = urlsplit(client.base_url)
        ours = urlsplit(uri)._replace(scheme=base.scheme, netloc=base.netloc)
        parts = client.retrieve_bulkdata(urlunsplit(ours))
        return b"".join(parts)

    ds = Dataset.from_json(md, bulk_data_uri_handler=bulk)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return save(ds, out)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    base, out, op, args = argv[0], Path(argv[1]), argv[2], argv[3:]
    client = DICOMwebClient(url=base)
    summary: dict = {}
    if op == "study":
        dss = client.retrieve_study(args[0])
        summary["instances"] = [save(d, out / "study") for d in dss]
    elif op == "series":
        dss = client.retrieve_series(args[0], args[1])
        summary["instances"] = [save(d, out / "series") for d in dss]
    elif op == "instance":
        media = None
        if len(args) > 3:
            media = (("application/dicom", args[3]),)
        ds = client.retrieve_instance(args[0], args[1], args[2], media_types=media)
        summary["instances"] = [save(ds, out / "instance")]
    elif op == "metadata":
        if len(args) == 1:
            md = client.retrieve_study_metadata(args[0])
        elif len(args) == 2:
            md = client.retrieve_series_metadata(args[0], args[1])
        else:
            md = [client.retrieve_instance_metadata(args[0], args[1], args[2])]
            summary["rebuilt"] = [rebuild(client, m, out / "rebuilt") for m in md]
        out.mkdir(parents=True, exist_ok=True)
        (out / "metadata.json").write_text(json.dumps(md))
        summary["sops"] = [m["00080018"]["Value"][0] for m in md]
    else:
        print(f"unknown op {op}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
