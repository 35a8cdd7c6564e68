"""Encrypted linear inference: TenSEAL's tutorial approach beside column packing.

Run ``.venv/bin/python benchmarks/he_bench.py [--repeats N] [--tutorial-rows N]``.

Both approaches evaluate the same StandardScaler + LogisticRegression model
(scaler folded into the weights) on the same synthetic rows
(``make_classification``, 30 features like breast cancer), with the same CKKS
parameters: N=8192, coefficient moduli [60, 40, 40, 60], scale 2**40.

- **tutorial**: one ciphertext per row, as in TenSEAL's "Tutorial 1: Logistic
  Regression on Encrypted Data": ``enc_x.dot(weights) + bias``. The dot
  product sums slots by rotation, so the context carries Galois keys (as in
  the tutorial). It is slow per row, so it runs on the first
  ``--tutorial-rows`` rows (200 by default) and per-row figures are quoted.
- **columns** (``secure_compute.he``): one ciphertext per feature holding a
  full batch of 4096 rows, plaintext-scalar products and additions only; the
  public context has no Galois or relinearisation keys. Run on 8192 rows, two
  full batches, so per-row figures are not flattered by a part-empty batch.
- **columns-fast**: the same on the "fast" preset (N=4096, [60, 30, 19],
  scale 2**36, 2048 rows a batch, four full batches).

For each: server ms per row (load the public context and ciphertexts,
compute, serialize the result: what ``he.evaluate`` does), end-to-end ms per
row (encrypt and serialize, server, decrypt; no network), upload bytes per row
(ciphertexts; the public context is reported apart and amortised in
``upload_bytes_per_row_with_context``), public context bytes, max absolute
logit error against ``decision_function`` and decision agreement with
``predict``. Timings are medians over ``--repeats`` runs (3 by default), one
thread for TenSEAL. ``speedup`` is the tutorial's server time per row over
the column approach's; ``speedup_without_tutorial_context_load`` leaves out
the tutorial's loading of its Galois-key context (ours always includes its
own context load), the conservative figure.

The last line printed is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import tenseal as ts
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from secure_compute import he
from secure_compute.presets import PRESETS

N_FEATURES = 30
#: Two full standard batches (four fast ones), so no batch is part-empty.
N_ROWS = 2 * PRESETS["standard"].slots
TUTORIAL_ROWS = 200
REPEATS = 3
SEED = 0


def dataset():
    """Rows with breast-cancer-like spread, and a scaled logistic regression."""
    X, y = make_classification(
        n_samples=N_ROWS, n_features=N_FEATURES, n_informative=10, random_state=SEED
    )
    X = X * np.linspace(0.01, 300, N_FEATURES) + np.linspace(-20, 500, N_FEATURES)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return X, model


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


# --------------------------------------------------------------------------- tutorial


def tutorial_context():
    """The benchmark's parameters, with Galois keys for the dot product's rotations."""
    context = ts.context(
        ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60], n_threads=1
    )
    context.global_scale = 2**40
    context.generate_galois_keys()
    return context


def tutorial_client_encrypt(context, X):
    return [ts.ckks_vector(context, row.tolist()).serialize() for row in X]


def tutorial_server(context, blobs, weights):
    """Load one vector per row; ``enc_x.dot(w) + b`` per row."""
    coef, bias = weights.coef[0].tolist(), float(weights.intercept[0])
    return [(ts.ckks_vector_from(context, blob).dot(coef) + bias).serialize() for blob in blobs]


def tutorial_client_decrypt(context, results):
    return np.array([ts.ckks_vector_from(context, blob).decrypt()[0] for blob in results])


def run_tutorial(X, model, repeats):
    weights = he.linear_model_fold(model)
    context = tutorial_context()
    public = context.serialize(save_secret_key=False, save_galois_keys=True, save_relin_keys=True)
    encrypt_s, load_s, server_s, decrypt_s = [], [], [], []
    for _ in range(repeats):
        blobs, seconds = timed(tutorial_client_encrypt, context, X)
        encrypt_s.append(seconds)
        served, seconds = timed(ts.context_from, public, 1)
        load_s.append(seconds)
        results, seconds = timed(tutorial_server, served, blobs, weights)
        server_s.append(seconds + load_s[-1])
        logits, seconds = timed(tutorial_client_decrypt, context, results)
        decrypt_s.append(seconds)
    upload = sum(len(blob) for blob in blobs)
    figures = summarise(
        "tutorial", X, model, logits, encrypt_s, server_s, decrypt_s, upload, public
    )
    # The Galois keys make the context tens of MB; show the per-row work without loading it.
    compute_s = [total - load for total, load in zip(server_s, load_s)]
    figures["server_ms_per_row_without_context_load"] = 1000 * statistics.median(compute_s) / len(X)
    return figures


# --------------------------------------------------------------------------- columns


def run_columns(name, preset, X, model, repeats):
    weights = he.linear_model_fold(model)
    context = he.make_context(preset)
    public = he.public_context_bytes(context)
    encrypt_s, server_s, decrypt_s = [], [], []
    for _ in range(repeats):
        request, seconds = timed(he.encrypt, context, X)
        encrypt_s.append(seconds)
        response, seconds = timed(he.evaluate, public, request, weights)
        server_s.append(seconds)
        logits, seconds = timed(he.decrypt, context, response)
        decrypt_s.append(seconds)
    figures = summarise(
        name, X, model, logits, encrypt_s, server_s, decrypt_s, len(request), public
    )
    figures["batch_rows"] = PRESETS[preset].slots
    figures["preset"] = preset
    return figures


def summarise(name, X, model, logits, encrypt_s, server_s, decrypt_s, upload, public):
    """Per-row medians and accuracy of one approach."""
    n = len(X)
    reference = model.decision_function(X)
    end_to_end = [sum(parts) for parts in zip(encrypt_s, server_s, decrypt_s)]
    return {
        "approach": name,
        "rows": n,
        "server_ms_per_row": 1000 * statistics.median(server_s) / n,
        "end_to_end_ms_per_row": 1000 * statistics.median(end_to_end) / n,
        "upload_bytes_per_row": upload / n,
        "upload_bytes_per_row_with_context": (upload + len(public)) / n,
        "public_context_bytes": len(public),
        "max_abs_logit_error": float(np.max(np.abs(logits - reference))),
        "decision_agreement": float(np.mean((logits > 0) == (reference > 0))),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--tutorial-rows", type=int, default=TUTORIAL_ROWS)
    args = parser.parse_args(argv)
    X, model = dataset()
    rows = [
        run_tutorial(X[: args.tutorial_rows], model, args.repeats),
        run_columns("columns", "standard", X, model, args.repeats),
        run_columns("columns-fast", "fast", X, model, args.repeats),
    ]
    for row in rows:
        print(
            f"{row['approach']:>13}: {row['rows']:5d} rows  server {row['server_ms_per_row']:8.4f} "
            f"ms/row  end-to-end {row['end_to_end_ms_per_row']:8.4f} ms/row  upload "
            f"{row['upload_bytes_per_row']:9.0f} B/row  context {row['public_context_bytes']:9d} B"
            f"  max error {row['max_abs_logit_error']:.1e}"
            f"  agreement {row['decision_agreement']:.4f}"
        )
    tutorial, columns, fast = rows
    summary = {
        "parameters": {"N": 8192, "coeff_mod_bit_sizes": [60, 40, 40, 60], "scale": "2**40"},
        "repeats": args.repeats,
        "tutorial": tutorial,
        "columns": columns,
        "columns_fast": fast,
        "speedup": tutorial["server_ms_per_row"] / columns["server_ms_per_row"],
        "speedup_fast": tutorial["server_ms_per_row"] / fast["server_ms_per_row"],
        "speedup_without_tutorial_context_load": (
            tutorial["server_ms_per_row_without_context_load"] / columns["server_ms_per_row"]
        ),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
