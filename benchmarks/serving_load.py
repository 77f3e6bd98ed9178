"""Load and latency of exported SavedModels: concurrent clients on this machine.

Each exported version is loaded in a fresh Python process in which ``tfuad``
cannot be imported (``tf.saved_model.load``, as a server would), and its
signatures are called from concurrent client threads over the loopback of
one process: slice batches through ``serving_default`` and whole volumes
through ``detect_volume``. Every configuration runs a fixed number of
requests (one untimed warm call first), so the run is bounded. Requests are
real: slices and the brain mask of a demo or dataset subject, prepared by
tfuad from the model's preprocessing contract.

Example::

    python benchmarks/serving_load.py --model serving/sae/1 --model serving/sae/2 \
        --data demo_data --clients 1,2,4 --requests 24 --json serving_load.json

``--json`` writes the record ``tfuad export --speed`` puts into the model card.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: Runs in a fresh interpreter: loads one SavedModel, calls its signatures from client threads.
CLIENT = r"""
import json, sys, threading, time
sys.modules["tfuad"] = None
import numpy as np
import tensorflow as tf

config = json.loads(sys.argv[1])
loaded = tf.saved_model.load(config["model"])
arrays = dict(np.load(config["inputs"]))
rows = []
for case in config["cases"]:
    fn = loaded.signatures[case["signature"]]
    inputs = {k: tf.constant(arrays[v]) for k, v in case["inputs"].items()}
    fn(**inputs)  # warm call: first-call initialisation is not load
    for clients in config["clients"]:
        per_client = max(1, config["requests"] // clients)
        latencies = [[] for _ in range(clients)]
        errors = []

        def client(i):
            try:
                for _ in range(per_client):
                    start = time.perf_counter()
                    answer = fn(**inputs)
                    _ = {k: v.numpy() for k, v in answer.items()}
                    latencies[i].append(time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - reported, not hidden
                errors.append(repr(err))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=config["timeout"])
        wall = time.perf_counter() - start
        done = np.concatenate([np.asarray(l, float) for l in latencies])
        rows.append({"signature": case["signature"], "request": case["request"], "clients": clients,
                     "requests": int(done.size), "seconds": wall, "requests_per_s": done.size / wall,
                     "slices_per_s": done.size * case["slices"] / wall,
                     "p50_ms": 1000 * float(np.percentile(done, 50)), "p99_ms": 1000 * float(np.percentile(done, 99)),
                     "errors": errors})
print(json.dumps(rows))
"""


def _inputs(version: Path, data, subject_id, batch: int, out: Path) -> tuple:
    """Slices and brain mask of a test subject, prepared from the model's contract; cases of the client."""
    from tfuad.data.layouts import discover
    from tfuad.data.preprocessing import PreprocessConfig, prepare_volume

    contract = json.loads((version / "assets.extra" / "tfuad_preprocess.json").read_text())
    dataset = discover(data)
    subjects = [s for s in dataset.subjects if subject_id in (None, s.id)]
    subject = next((s for s in subjects if s.split == "test"), subjects[0])
    prep = prepare_volume(subject.image(contract["modality"]), PreprocessConfig.from_dict(contract["preprocess"]),
                          brain_mask_path=subject.brain_mask, stats=contract["intensity_stats"])
    brainy = np.flatnonzero(prep.brain_fraction() > 0.2)
    pick = brainy[np.linspace(0, len(brainy) - 1, batch).astype(int)]
    np.savez(out, slices=prep.slices[pick], volume_slices=prep.slices, brain_mask=prep.brain_mask)
    size = prep.slices.shape[1]
    cases = [{"signature": "serving_default", "inputs": {"slices": "slices"}, "slices": batch,
              "request": f"{batch} slices {size}×{size}"},
             {"signature": "detect_volume", "inputs": {"slices": "volume_slices", "brain_mask": "brain_mask"},
              "slices": len(prep.slices),
              "request": f"volume {'×'.join(map(str, prep.brain_mask.shape))} ({len(prep.slices)} slices)"}]
    return contract, subject.id, cases


def run(models, data, *, subject=None, clients=(1, 2, 4), requests: int = 24, batch: int = 8,
        timeout: float = 1800.0, log=print) -> dict:
    """Measure every model; returns the speed record (``source``, ``hardware``, ``rows``)."""
    from tfuad.export.model_card import hardware

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in map(Path, models):
            npz = Path(tmp) / f"{model.parent.name}-{model.name}.npz"
            contract, subject_id, cases = _inputs(model, data, subject, batch, npz)
            restore = contract.get("restore") or {}
            settings = restore.get("schedule_settings", {})
            steps = settings.get("max_steps", settings.get("steps"))
            method = contract["method"] + (f" ({restore.get('schedule')}, ≤ {steps} steps)"
                                           if contract["method"] == "map-tv" else "")
            config = {"model": str(model), "inputs": str(npz), "cases": cases, "clients": list(clients),
                      "requests": int(requests), "timeout": float(timeout)}
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            log(f"{model}: {method}, subject {subject_id}")
            done = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(config)], capture_output=True,
                                  text=True, env=env, timeout=timeout * (len(clients) * len(cases) + 1))
            if done.returncode != 0:
                raise RuntimeError(f"{model}: the client process failed:\n{done.stderr[-3000:]}")
            for row in json.loads(done.stdout.strip().splitlines()[-1]):
                row.update({"model": str(model), "method": method, "precision": "float32"})
                rows.append(row)
                log(f"  {row['signature']:<16} {row['request']:<32} clients {row['clients']}: "
                    f"{row['requests_per_s']:7.2f} req/s, p50 {row['p50_ms']:8.1f} ms, p99 {row['p99_ms']:8.1f} ms"
                    + (f", ERRORS {row['errors']}" if row["errors"] else ""))
    return {"source": "benchmarks/serving_load.py: tf.saved_model.load in a fresh process without tfuad, "
                      f"concurrent client threads, {requests} requests per configuration after one warm call",
            "hardware": hardware(), "rows": rows}


def markdown(record: dict) -> str:
    """The record as a Markdown table."""
    lines = ["| method | signature | request | clients | requests/s | slices/s | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['method']} | {r['signature']} | {r['request']} | {r['clients']} | "
                     f"{r['requests_per_s']:.2f} | {r['slices_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="exported version folder (repeatable)")
    parser.add_argument("--data", required=True, help="dataset folder or manifest with the subject to send")
    parser.add_argument("--subject", default=None, help="subject id (default: the first test subject)")
    parser.add_argument("--clients", default="1,2,4", help="concurrent client threads, comma-separated")
    parser.add_argument("--requests", type=int, default=24, help="requests per configuration (all clients)")
    parser.add_argument("--batch", type=int, default=8, help="slices per serving_default request")
    parser.add_argument("--json", default=None, help="write the speed record here (tfuad export --speed)")
    args = parser.parse_args(argv)
    clients = tuple(int(c) for c in args.clients.split(","))
    if args.requests < 1 or args.batch < 1 or min(clients) < 1:
        parser.error("--requests, --batch and --clients must be positive")
    record = run(args.model, args.data, subject=args.subject, clients=clients, requests=args.requests,
                 batch=args.batch)
    hw = record["hardware"]
    print(f"\n{hw['cpu']}, {hw['cpu_count']} logical CPUs, GPUs: {hw['gpus'] or 'none'}\n")
    print(markdown(record))
    if args.json:
        from tfuad.files import write_json

        write_json(record, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
