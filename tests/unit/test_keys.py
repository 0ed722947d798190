from __future__ import annotations

import dataclasses
import json

from warmstart.cache.keys import cache_key, key_inputs
from warmstart.core.spec import AppSpec, HttpCall, WarmupSpec
from warmstart.engines.base import EngineInfo

ENGINE = EngineInfo("podman", "4.3.1", "runc", "1.1.5")
BASE = AppSpec(name="a", image="img", command=("serve",), env={"MODE": "fast", "TOKEN": "s3cret"}, ports=(80,),
               secret_env=("TOKEN",), warmup=WarmupSpec(requests=(HttpCall(path="/"),), repeat=5))


def key(spec: AppSpec = BASE, image_id: str = "sha256:1", engine: EngineInfo = ENGINE, criu: str = "4.2.1") -> str:
    return cache_key(key_inputs(spec, image_id=image_id, engine=engine, criu_version=criu))


def test_same_inputs_same_key() -> None:
    assert key() == key(dataclasses.replace(BASE))


def test_everything_that_changes_the_snapshot_changes_the_key() -> None:
    variants = [
        key(image_id="sha256:2"),
        key(dataclasses.replace(BASE, command=("serve", "--debug"))),
        key(dataclasses.replace(BASE, env={**BASE.env, "MODE": "slow"})),
        key(dataclasses.replace(BASE, warmup=WarmupSpec(requests=(HttpCall(path="/"),), repeat=6))),
        key(dataclasses.replace(BASE, ports=(81,))),
        key(engine=EngineInfo("podman", "5.0", "runc", "1.1.5")),
        key(engine=EngineInfo("podman", "4.3.1", "runc", "1.2")),
        key(criu="4.3"),
    ]
    assert len(set(variants) | {key()}) == len(variants) + 1


def test_secret_values_are_not_key_material_and_not_stored() -> None:
    assert key(dataclasses.replace(BASE, env={**BASE.env, "TOKEN": "rotated"})) == key()
    inputs = key_inputs(BASE, image_id="x", engine=ENGINE, criu_version="4.2.1")
    text = json.dumps(inputs)
    assert "s3cret" not in text and "fast" not in text  # non-secret values only as digests
    assert "TOKEN" not in inputs["env"] and inputs["secret_env"] == ["TOKEN"]  # the name only
