"""Python example: a price-prediction service that imports pandas and scikit-learn and fits a model at start.

GET /healthz, POST /predict {"features": [...]} (or GET /predict?row=N), GET /stats (boot token, request count,
model score), GET /random (clones of one snapshot must differ). Uses warmstart_helper: its after-restore hook
reseeds `random` and numpy, and re-creates the per-process request id prefix.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
import uuid

START = time.monotonic()

import numpy as np  # noqa: E402  (the imports are the point: they are the cold start)
import pandas as pd  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from sklearn.datasets import make_regression  # noqa: E402
from sklearn.ensemble import RandomForestRegressor  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import warmstart_helper  # noqa: E402

BOOT_TOKEN = secrets.token_hex(8)
STATE = {"count": 0, "instance": uuid.uuid4().hex[:8]}
LOCK = threading.Lock()

# Fit at start: the seconds a cold start spends here are what a snapshot saves.
X, y = make_regression(n_samples=int(os.environ.get("SAMPLES", "20000")), n_features=12, noise=0.3, random_state=7)
FRAME = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
X_train, X_test, y_train, y_test = train_test_split(FRAME, y, random_state=7)
MODEL = RandomForestRegressor(n_estimators=int(os.environ.get("TREES", "60")), max_depth=12, n_jobs=1,
                              random_state=7).fit(X_train, y_train)
SCORE = float(MODEL.score(X_test, y_test))


@warmstart_helper.register_after_restore
def _new_instance_id() -> None:
    STATE["instance"] = uuid.uuid4().hex[:8]  # per-process identity must not be shared by clones


app = Flask(__name__)


@app.before_request
def _count() -> None:
    with LOCK:
        STATE["count"] += 1


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(ready=True)


@app.route("/predict", methods=["GET", "POST"])
def predict():  # type: ignore[no-untyped-def]
    if request.method == "POST":
        row = pd.DataFrame([request.get_json(force=True)["features"]], columns=FRAME.columns)
    else:
        row = X_test.iloc[[int(request.args.get("row", 0)) % len(X_test)]]
    return jsonify(prediction=float(MODEL.predict(row)[0]))


@app.get("/stats")
def stats():  # type: ignore[no-untyped-def]
    return jsonify(boot_token=BOOT_TOKEN, count=STATE["count"], instance=STATE["instance"], score=SCORE,
                   rows=len(FRAME))


@app.get("/random")
def rand():  # type: ignore[no-untyped-def]
    return jsonify(random=random.random(), numpy=float(np.random.random()), uuid=str(uuid.uuid4()))


if __name__ == "__main__":
    from werkzeug.serving import make_server

    warmstart_helper.install()
    server = make_server("0.0.0.0", int(os.environ.get("PORT", "8080")), app, threaded=True)
    print(f"model ready: score={SCORE:.3f} in {time.monotonic() - START:.2f}s token={BOOT_TOKEN}", flush=True)
    server.serve_forever()
