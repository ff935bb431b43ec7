#!/usr/bin/env python3
"""dicomweb-client searches for the QIDO-RS tests.

  qido_client.py URL CALLS_JSON

CALLS_JSON is a list of calls, each {"op": "studies"|"series"|"instances",
and any of "study", "series", "filters", "fields", "limit", "offset",
"fuzzy"}. Prints one JSON line per call: the list of results, or
{"error": "..."} when the call raised. DICOMWEB_BEARER in the environment
is sent as a bearer token; REQUESTS_CA_BUNDLE names a private CA for https.
"""

import json
import os
import sys

from dicomweb_client.api import DICOMwebClient


def main():
    url, calls = sys.argv[1], json.loads(sys.argv[2])
    token = os.environ.get("DICOMWEB_BEARER")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = DICOMwebClient(url, headers=headers)
    for call in calls:
        kwargs = {
            "search_filters": call.get("filters"),
            "fields": call.get("fields"),
            "limit": call.get("limit"),
            "offset": call.get("offset"),
            "fuzzymatching": call.get("fuzzy"),
        }
        op = call["op"]
        if op in ("series", "instances") and "study" in call:
            kwargs["study_instance_uid"] = call["study"]
        if op == "instances" and "series" in call:
            kwargs["series_instance_uid"] = call["series"]
        try:
            result = getattr(client, "search_for_" + op)(**kwargs)
        except Exception as e:  # reported to the test, which decides
            result = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
