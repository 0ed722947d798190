"""A FastAPI app under uvicorn: an in-memory item store."""
from fastapi import FastAPI

app = FastAPI()
ITEMS: dict[str, str] = {}


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.put("/items/{key}")
def put(key: str, value: str) -> dict:
    ITEMS[key] = value
    return ITEMS


@app.get("/items/{key}")
def get(key: str) -> dict:
    return {"key": key, "value": ITEMS.get(key)}
