"""Load and validate pipeline configs against the one schema, filling its defaults.

The schema (stage/schemas/config.schema.yaml) is the single source of truth for config keys and
defaults; Snakemake validates against the same file. Code receives plain dicts, one per section.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from stage.errors import StageError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"  # package data: an installed wheel carries them
SCHEMA_PATH = SCHEMA_DIR / "config.schema.yaml"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _validator_filling_defaults(cls):
    """A jsonschema validator that writes each property's `default` into the instance first."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


_Validator = _validator_filling_defaults(jsonschema.Draft202012Validator)


def validate(config: dict, source: str = "config") -> dict:
    """Return a deep copy of `config` with defaults filled; raise StageError naming the bad key."""
    config = copy.deepcopy(config) if config is not None else {}
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "(top level)"
        raise StageError(f"{source}: invalid value at '{where}': {e.message}. See {SCHEMA_PATH} for allowed values.")
    check_one_sampler(config, config["diffusion"]["num_steps"], source)
    return config


def check_one_sampler(config: dict, trained_steps: int, source: str) -> None:
    """StageError where stage 3's simulated inference or the rollouts would sample with other steps than
    `trained_steps` (diffusion.num_steps; a rollout passes its checkpoint's) without
    diffusion.allow_sampler_mismatch: the model would meet a sampler at rollout it never trained through."""
    if config["diffusion"]["allow_sampler_mismatch"]:
        return
    for key, value in (("train.stage3.sampling_steps", config["train"]["stage3"]["sampling_steps"]),
                       ("rollout.num_steps", config["rollout"]["num_steps"])):
        if value is not None and value != trained_steps:
            raise StageError(f"{source}: {key} is {value} but the sampler has {trained_steps} steps "
                             "(diffusion.num_steps): simulated inference and rollouts share one sampler; set "
                             f"{key} to null, or diffusion.allow_sampler_mismatch: true to mismatch on purpose")


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load(paths: Iterable[str | Path] = ()) -> dict:
    """Merge config files in order (later wins, like snakemake --configfile) and validate."""
    merged: dict[str, Any] = {}
    names = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise StageError(f"config file {p} does not exist; pass an existing YAML file with --config")
        try:
            data = yaml.safe_load(p.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise StageError(f"config file {p} is not text (not UTF-8: {exc.reason} at byte {exc.start}); pass "
                             "a YAML file with --config") from exc
        except yaml.YAMLError as exc:
            raise StageError(f"config file {p} is not valid YAML: {' '.join(str(exc).split())}") from exc
        if not isinstance(data, dict):
            raise StageError(f"config file {p} must hold a mapping of sections, found {type(data).__name__}")
        merged = deep_merge(merged, data)
        names.append(str(p))
    return validate(merged, source=" + ".join(names) or "default config")


def default() -> dict:
    return validate({})


def section_hash(section: Any) -> str:
    """Stable short hash of a config section (provenance, cache keys)."""
    blob = json.dumps(section, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
