#!/usr/bin/env python3
"""dicomweb-client reads a series' metadata and fetches the first
BulkDataURI in it, as a viewer would.

  bulkdata_client.py URL STUDY_UID SERIES_UID

Prints {"uri": ..., "parts": N, "bytes": N} on success; exits 1 with the
error otherwise.
"""

import json
import sys

from dicomweb_client.api import DICOMwebClient


def main():
    url, study, series = sys.argv[1:4]
    client = DICOMwebClient(url)
    metadata = client.retrieve_series_metadata(study, series)
    uri = next(
        value["BulkDataURI"]
        for instance in metadata
        for value in instance.values()
        if isinstance(value, dict) and "BulkDataURI" in value
    )
    parts = client.retrieve_bulkdata(uri)
    print(json.dumps({"uri": uri, "parts": len(parts), "bytes": sum(len(p) for p in parts)}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test shows it
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
