"""Checks that the HF cache written by mlcli is read by Python's huggingface_hub, and writes
one more file with huggingface_hub for mlcli to read back.

Run by tests/hf_cache_python.rs (cargo test, and so .ci/run) with HF_HUB_CACHE and HF_ENDPOINT
set to the test's cache and fake Hub. Argument: a JSON object
  {"check": [{"repo": "org/r", "file": "f.gguf", "sha256": "..."}],
   "download": {"repo": "org/r", "file": "g.gguf"}}
Prints the path of the downloaded file on stdout; exits non-zero on any mismatch.
"""

import hashlib
import json
import sys

from huggingface_hub import hf_hub_download, try_to_load_from_cache


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    spec = json.loads(sys.argv[1])
    for item in spec["check"]:
        found = try_to_load_from_cache(repo_id=item["repo"], filename=item["file"])
        if not isinstance(found, str):
            sys.exit(f"try_to_load_from_cache({item['repo']!r}, {item['file']!r}) = {found!r}")
        if sha256(found) != item["sha256"]:
            sys.exit(f"{found}: content does not match")
        print(f"found {item['repo']}/{item['file']} at {found}", file=sys.stderr)
    d = spec.get("download")
    if d:
        print(hf_hub_download(repo_id=d["repo"], filename=d["file"]))


if __name__ == "__main__":
    main()
