"""Readiness and liveness probe: GET /ping on the pod's inference port, with the inference key when
TorchServe runs in token mode (it then guards /ping too and writes the key to key_file.json).

    python probe.py [PING_URL [KEY_FILE]]    # exit 0: Healthy
"""
import json
import sys
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/ping"
key_file = sys.argv[2] if len(sys.argv) > 2 else "/home/model-server/key_file.json"
headers = {}
try:
    with open(key_file) as f:
        headers["Authorization"] = "Bearer " + json.load(f)["inference"]["key"]
except (OSError, ValueError, KeyError):
    pass  # token mode off: /ping needs no key
request = urllib.request.Request(url, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=3) as response:
        sys.exit(0 if json.load(response).get("status") == "Healthy" else 1)
except Exception as e:  # noqa: BLE001 (any failure is "not healthy")
    print(f"ping failed: {e}", file=sys.stderr)
    sys.exit(1)
