"""A Flask app under gunicorn's pre-fork workers: POST /notes stores a note in the master's preloaded state."""
import os

from flask import Flask, jsonify, request

app = Flask(__name__)
NOTES: list[str] = []


@app.get("/healthz")
def healthz():
    return "ok"


@app.get("/notes")
def notes():
    return jsonify(notes=NOTES, worker=os.getpid())


@app.post("/notes")
def add():
    NOTES.append(request.get_data(as_text=True))
    return jsonify(notes=NOTES)
