"""An sklearn model server: a gradient-boosted classifier trained at boot (the seconds a restore saves), served by
gunicorn; GET /predict?row=N answers the model's class probabilities for a fixed row, equal cold and restored."""
from flask import Flask, jsonify, request
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier

X, y = make_classification(n_samples=4000, n_features=20, random_state=7)
MODEL = GradientBoostingClassifier(n_estimators=150, random_state=7).fit(X, y)
app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return "ok"


@app.get("/predict")
def predict():
    row = int(request.args.get("row", "0")) % len(X)
    return jsonify(row=row, proba=[round(float(p), 12) for p in MODEL.predict_proba(X[row:row + 1])[0]])
