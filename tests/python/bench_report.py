"""Runs one of the bench's report scripts (benches/*.py) on rows written to a results file, as
scripts/bench does, and returns what it printed."""

import json
import os
import subprocess
import sys

BENCHES = os.path.join(os.path.dirname(__file__), "..", "..", "benches")


def run_report(script, tmp_path, rows, *args):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, os.path.join(BENCHES, script), str(path), *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout
