"""The fields of the nuScenes tables that the devkit and the extractor read, checked before they are used.

A dataset's tables are someone else's data: a row missing a field, a value of the wrong type or a token
that points nowhere would otherwise surface as a KeyError deep inside the devkit or as NaN geometry in
the condition images. `check_tables` names the table, the row's token and the field instead.
"""

from __future__ import annotations

import math
from pathlib import Path

from stage.errors import StageError

# Field kinds: str, int, bool, num (finite number), vec3 / vec4 (finite numbers), intrinsic (empty or 3x3),
# ref:T (token of table T), ref?:T (the same or "" at a chain's end), refs:T (list of tokens of T).
FIELDS: dict[str, dict[str, str]] = {
    "category": {"token": "str", "name": "str"},
    "attribute": {"token": "str", "name": "str"},
    "visibility": {"token": "str"},
    "instance": {"token": "str", "category_token": "ref:category"},
    "sensor": {"token": "str", "channel": "str", "modality": "str"},
    "calibrated_sensor": {"token": "str", "sensor_token": "ref:sensor", "translation": "vec3", "rotation": "vec4",
                          "camera_intrinsic": "intrinsic"},
    "ego_pose": {"token": "str", "timestamp": "int", "translation": "vec3", "rotation": "vec4"},
    "log": {"token": "str", "location": "str"},
    "scene": {"token": "str", "name": "str", "description": "str", "log_token": "ref:log",
              "first_sample_token": "ref:sample", "last_sample_token": "ref:sample"},
    "sample": {"token": "str", "timestamp": "int", "scene_token": "ref:scene", "prev": "ref?:sample",
               "next": "ref?:sample"},
    "sample_data": {"token": "str", "sample_token": "ref:sample", "ego_pose_token": "ref:ego_pose",
                    "calibrated_sensor_token": "ref:calibrated_sensor", "timestamp": "int", "is_key_frame": "bool",
                    "filename": "str", "width": "int", "height": "int", "prev": "ref?:sample_data",
                    "next": "ref?:sample_data"},
    "sample_annotation": {"token": "str", "sample_token": "ref:sample", "instance_token": "ref:instance",
                          "translation": "vec3", "size": "vec3", "rotation": "vec4"},
    "map": {"token": "str", "log_tokens": "refs:log"},
}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _value_problem(kind: str, value, tokens: dict[str, set]) -> str | None:
    if kind == "str":
        return None if isinstance(value, str) else "is not a string"
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "is not an integer"
    if kind == "bool":
        return None if isinstance(value, bool) else "is not true/false"
    if kind in ("vec3", "vec4"):
        n = int(kind[-1])
        ok = isinstance(value, list) and len(value) == n and all(_finite(x) for x in value)
        if ok and kind == "vec4" and sum(x * x for x in value) < 1e-12:
            return "is a zero quaternion"
        return None if ok else f"is not a list of {n} finite numbers"
    if kind == "intrinsic":
        ok = isinstance(value, list) and (not value or (len(value) == 3 and all(
            isinstance(r, list) and len(r) == 3 and all(_finite(x) for x in r) for r in value)))
        return None if ok else "is neither empty nor a 3x3 matrix of finite numbers"
    target = kind.split(":", 1)[1]
    if kind.startswith("refs:"):
        ok = isinstance(value, list) and all(isinstance(t, str) and t in tokens[target] for t in value)
        return None if ok else f"is not a list of {target} tokens"
    if kind.startswith("ref?:") and value == "":
        return None
    return None if isinstance(value, str) and value in tokens[target] else f"names no {target} record"


def check_tables(tables: dict[str, list], table_dir: str | Path) -> None:
    """StageError naming table, row and field for the first record the devkit or the extractor cannot use.

    `tables` maps each table name of FIELDS to its list of records (the parsed JSON files)."""
    table_dir = Path(table_dir)
    fix = "repair the table (or re-download / re-generate the dataset)"
    for name in FIELDS:
        if not isinstance(tables.get(name), list) or not all(isinstance(r, dict) for r in tables[name]):
            raise StageError(f"{table_dir / (name + '.json')}: not a list of records; {fix}")
    for name in FIELDS:  # tokens first: the other fields' references are checked against them
        for i, record in enumerate(tables[name]):
            if not isinstance(record.get("token"), str):
                raise StageError(f"{table_dir / (name + '.json')}: record {i} has no string field 'token'; {fix}")
    tokens = {name: {r["token"] for r in tables[name]} for name in FIELDS}
    for name, fields in FIELDS.items():
        for i, record in enumerate(tables[name]):
            for key, kind in fields.items():
                where = f"{table_dir / (name + '.json')}: record {i} (token {record.get('token')!r})"
                if key not in record:
                    raise StageError(f"{where} lacks the field {key!r}; {fix}")
                problem = _value_problem(kind, record[key], tokens)
                if problem:
                    raise StageError(f"{where}: field {key!r} = {str(record[key])[:60]!r} {problem}; {fix}")
        if len(tokens[name]) != len(tables[name]):
            raise StageError(f"{table_dir / (name + '.json')}: two records share a token; {fix}")
