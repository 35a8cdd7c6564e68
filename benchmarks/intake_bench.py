"""Time and peak memory to refuse the decompression bombs and the wide CSV of issue 9.

Run ``PYTHONPATH=. .venv/bin/python benchmarks/intake_bench.py [--max-mib 200]``.

Each hostile file is built once (tests/hostile_files.py) into a temporary
folder, then refused in a fresh child process, so that one case's memory does
not count against the next: the child imports the libraries, reads the file,
resets its peak resident memory (Linux ``/proc/self/clear_refs``), calls the
loader and reports the seconds the refusal took and how far its peak memory
(VmHWM) rose above the memory in use before the call. ``--max-mib`` is the upload
limit passed as ``max_bytes`` (the service's TRE_AUDIT_MAX_UPLOAD_BYTES is
200 MiB). A sound model and a sound table are timed the same way, for scale.

Figures are wall-clock on a shared machine: run it when the machine is quiet.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {
    "skops_schema_bomb_1.5GiB": ("model", lambda h: h.skops_schema_bomb()),
    "skops_array_bomb_1.5GiB": ("model", lambda h: h.skops_array_bomb()),
    "skops_zip_slip": ("model", lambda h: h.skops_zip_slip()),
    "skops_sound_model": ("model", lambda h: h.skops_model()),
    "parquet_row_bomb_100M_rows": ("table.parquet", lambda h: h.parquet_row_bomb()),
    "parquet_text_bomb_4GiB": ("table.parquet", lambda h: h.parquet_text_bomb()),
    "csv_20000_columns": ("table.csv", lambda h: h.csv_wide(20_000)),
    "csv_sound_100k_rows": ("table.csv", lambda h: _sound_csv()),
}

_CHILD = """
import json, sys, time
from attacks.exceptions import IntakeError
from attacks.intake import load_model, load_table

def status(key):
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024

kind, path, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak (VmHWM) to the memory in use now
before = status("VmRSS")
start = time.perf_counter()
try:
    if kind == "model":
        load_model(data, max_bytes=max_bytes)
    else:
        load_table(data, filename=kind, max_bytes=max_bytes)
    outcome = "accepted"
except IntakeError as exc:
    outcome = str(exc)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rise_mib": status("VmHWM") - before,
                  "outcome": outcome}))
"""


def _sound_csv() -> bytes:
    lines = ["a,b,c,y"] + [f"{i},{i % 7},{i % 3}.5,{i % 2}" for i in range(100_000)]
    return ("\n".join(lines) + "\n").encode()


def _run_case(name: str, kind: str, build, folder: Path, max_bytes: int) -> dict:
    import tests.hostile_files as hostile_files

    start = time.perf_counter()
    data = build(hostile_files)
    build_seconds = time.perf_counter() - start
    path = folder / name
    path.write_bytes(data)
    del data
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, str(path), str(max_bytes)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    return {"file_bytes": path.stat().st_size, "build_seconds": round(build_seconds, 2), **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-mib", type=int, default=200, help="upload limit (max_bytes)")
    parser.add_argument("--only", nargs="*", default=list(CASES), help="cases to run")
    args = parser.parse_args()
    max_bytes = args.max_mib * 2**20
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only:
            kind, build = CASES[name]
            results[name] = _run_case(name, kind, build, Path(folder), max_bytes)
            figures = results[name]
            print(
                f"{name:28s} {figures['file_bytes'] / 2**20:8.2f} MiB file  "
                f"{figures['seconds']:7.3f} s  peak +{figures['peak_rise_mib']:7.1f} MiB  "
                f"{figures['outcome'][:90]}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}", flush=True)
    print(json.dumps({"max_bytes": max_bytes, "cases": results}))


if __name__ == "__main__":
    main()
