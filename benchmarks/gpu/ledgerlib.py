"""The GPU ledger (benchmarks/gpu/ledger.yaml): loading, validation, budget planning, target checks.

Shared by ``run.py`` (on the device) and ``collect.py`` (on the host). Standard library + PyYAML only: it must run
on the device image without pytest or torch imported.
"""

from __future__ import annotations

import operator
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

SCHEMA = "prunekit.gpu-ledger/1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LEDGER = HERE / "ledger.yaml"
STATUSES = ("pending", "done", "blocked")
REQUIRED = ("id", "title", "status", "command", "est_device_min", "needs", "writes", "target", "check", "result",
            "notes", "smoke")
NEEDS_KEYS = ("data", "checkpoint", "wheel")
OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt,
                                              "<": operator.lt, "==": operator.eq}


def load(path: str | Path = LEDGER) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: not a GPU ledger (expected a mapping with a 'rows' list)")
    return data


def status_word(row: dict[str, Any]) -> str:
    """``pending`` / ``done`` / ``blocked`` (a status may carry a reason: ``blocked (method not landed)``)."""
    return str(row.get("status") or "").split(" ", 1)[0].split("(", 1)[0].strip()


def rows_by_id(ledger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in ledger["rows"]}


def as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def scripts_of(command: str) -> list[str]:
    """Repository files a command runs or reads: ``python X.py`` scripts and ``--recipe`` files."""
    words = shlex.split(command)
    found = [w for i, w in enumerate(words) if i > 0 and words[i - 1] == "python" and w.endswith(".py")]
    found += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--recipe" and "{" not in words[i + 1]]
    return found


# ------------------------------------------------------------------------------------------------ validation
def validate(ledger: dict[str, Any], repo: Path = REPO) -> list[str]:
    """Every problem found (empty list: valid). Checks fields, statuses, references and that files exist."""
    problems: list[str] = []
    if ledger.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA!r}, got {ledger.get('schema')!r}")
    ids = [r.get("id") for r in ledger["rows"]]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        problems.append(f"duplicate row ids {dup}")
    by_id = {r.get("id"): r for r in ledger["rows"]}
    for r in ledger["rows"]:
        rid = r.get("id", "<no id>")
        p = problems.append
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            p(f"{rid}: missing field(s) {missing}")
            continue
        word = status_word(r)
        if word not in STATUSES:
            p(f"{rid}: status {r['status']!r} is not one of {STATUSES} (optionally followed by '(reason)')")
        needs = r["needs"]
        if not isinstance(needs, dict) or any(k not in needs for k in NEEDS_KEYS):
            p(f"{rid}: needs must be a mapping with keys {NEEDS_KEYS}")
            continue
        if needs["data"] not in (None, "cifar10"):
            p(f"{rid}: needs.data must be null or cifar10")
        for w in as_list(needs["wheel"]):
            if w != "torch_pruning":
                p(f"{rid}: unknown wheel {w!r} (known: torch_pruning)")
        ck = needs["checkpoint"]
        if ck is not None:
            if not isinstance(ck, dict) or not {"path", "from_row", "committed"} <= set(ck):
                p(f"{rid}: needs.checkpoint must have path, from_row, committed")
            elif ck["from_row"] not in by_id:
                p(f"{rid}: needs.checkpoint.from_row {ck['from_row']!r} is not a row")
            elif not any(a.get("path") == ck["path"] for a in as_list(by_id[ck["from_row"]].get("artifacts"))) \
                    and ck["committed"] is not None:
                p(f"{rid}: {ck['from_row']} has no artifact {ck['path']!r} to bring the committed checkpoint back")
        if r.get("part_of") is not None:
            parent = by_id.get(r["part_of"])
            if parent is None:
                p(f"{rid}: part_of {r['part_of']!r} is not a row")
            elif parent["command"] != r["command"]:
                p(f"{rid}: a part_of row must repeat its parent's command exactly")
        est_if = r.get("est_if_done")
        if est_if is not None and (est_if.get("row") not in by_id or not isinstance(est_if.get("est_device_min"),
                                                                                    (int, float))):
            p(f"{rid}: est_if_done needs row (a ledger row) and est_device_min")
        if word == "blocked":
            if r["command"] is not None and not isinstance(r["command"], str):
                p(f"{rid}: command must be a string or null")
            continue
        # pending and done rows must be runnable
        if not isinstance(r["command"], str) or not r["command"].startswith("python benchmarks/"):
            p(f"{rid}: command must start with 'python benchmarks/' (run from the repo root)")
            continue
        if not isinstance(r["est_device_min"], (int, float)) or r["est_device_min"] <= 0:
            p(f"{rid}: est_device_min must be a positive number")
        for f in scripts_of(r["command"]):
            if not (repo / f).is_file():
                p(f"{rid}: {f} (named by its command) does not exist")
        if not as_list(r["writes"]):
            p(f"{rid}: writes must list the result file(s) the command writes")
        for w in as_list(r["writes"]):
            if not str(w).endswith(".json"):
                p(f"{rid}: writes {w!r}: only JSON result files travel back")
        for c in as_list(r["check"]):
            if c.get("file") not in as_list(r["writes"]) or c.get("op") not in OPS or "path" not in c:
                p(f"{rid}: check {c!r} needs file (one of writes), path and op in {sorted(OPS)}")
        sm = r["smoke"]
        if not isinstance(sm, dict) or not isinstance(sm.get("command"), str):
            p(f"{rid}: smoke must give a command")
        else:
            if scripts_of(sm["command"])[:1] != scripts_of(r["command"])[:1]:
                p(f"{rid}: the smoke command must run the same script as the command")
            for f in scripts_of(sm["command"]):
                if not (repo / f).is_file():
                    p(f"{rid}: smoke: {f} does not exist")
            if "{smoke_recipe}" in sm["command"] and not (sm.get("recipe") or {}).get("from"):
                p(f"{rid}: smoke uses {{smoke_recipe}} but gives no recipe.from")
            if (sm.get("recipe") or {}).get("from") and not (repo / sm["recipe"]["from"]).is_file():
                p(f"{rid}: smoke recipe.from {sm['recipe']['from']} does not exist")
            if not as_list(sm.get("writes")) and r.get("part_of") is None:
                p(f"{rid}: smoke must list writes")
        if word == "done":
            if not r["result"]:
                p(f"{rid}: a done row must name its result file(s)")
            for f in as_list(r["result"]):
                if not (repo / f).is_file():
                    p(f"{rid}: result {f} does not exist")
        elif r["result"]:
            p(f"{rid}: only done rows carry a result")
    return problems


# ------------------------------------------------------------------------------------------------ planning
@dataclass
class Plan:
    scheduled: list[str] = field(default_factory=list)
    est: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    left_min: float = 0.0


def row_estimate(row: dict[str, Any], *, dry_run: bool, done_here: set[str], scheduled: Iterable[str] = ()
                 ) -> float:
    if dry_run:
        return float((row.get("smoke") or {}).get("est_min", 1.0))
    est_if = row.get("est_if_done")
    if est_if and est_if["row"] in done_here:
        return float(est_if["est_device_min"])
    return float(row["est_device_min"])


def plan(ledger: dict[str, Any], budget_min: float, *, dry_run: bool = False, only: list[str] | None = None,
         done_here: set[str] | frozenset[str] = frozenset(), checkpoint_available: Callable[[dict], bool] =
         lambda ck: False, wheel_ok: Callable[[str], bool] = lambda w: True, data_ok: Callable[[], str | None] =
         lambda: None, files_left: int | None = None, exclude: dict[str, str] | None = None) -> Plan:
    """The rows to run now, greedily in ledger order, each fitting the minutes still unplanned.

    A row is skipped when: it is blocked, measured by another row (``part_of``), done (in the ledger, unless named
    in ``only`` or ``dry_run``; or here: ``done_here``), a wheel or the data is missing (``data_ok`` returns a
    reason), its checkpoint is neither available (``checkpoint_available``: done on this machine or committed)
    nor produced by a row planned before it, it does not fit the minutes left, or the out folder's file cap
    (``files_left``: one result file per row plus its artifacts) would be exceeded, or it is in ``exclude``
    (id -> reason: e.g. already attempted by this runner call).
    """
    by_id = rows_by_id(ledger)
    if only is not None:
        unknown = [i for i in only if i not in by_id]
        if unknown:
            raise ValueError(f"unknown row id(s) {unknown}; known: {list(by_id)}")
        for i in only:
            if by_id[i].get("part_of"):
                raise ValueError(f"{i} is measured by {by_id[i]['part_of']}: select that row")
    out = Plan(left_min=float(budget_min))
    for row in ledger["rows"]:
        rid = row["id"]
        if only is not None and rid not in only:
            continue
        word = status_word(row)
        if exclude and rid in exclude:
            out.skipped[rid] = exclude[rid]
            continue
        if row.get("part_of"):
            out.skipped[rid] = f"measured by {row['part_of']}"
            continue
        if word == "blocked":
            out.skipped[rid] = str(row["status"])
            continue
        if rid in done_here:
            out.skipped[rid] = "done here already (result in the out folder or on this machine)"
            continue
        if word == "done" and not dry_run and (only is None or rid not in only):
            out.skipped[rid] = f"done (ledger: {row['result']})"
            continue
        needs = row["needs"]
        missing = [w for w in as_list(needs["wheel"]) if not wheel_ok(w)]
        if missing:
            out.skipped[rid] = f"blocked: needs {', '.join(missing)} importable (carry it: benchmarks/gpu/README.md)"
            continue
        if needs["data"]:
            why = data_ok()
            if why:
                out.skipped[rid] = f"blocked: {why}"
                continue
        ck = needs["checkpoint"]
        if ck is not None and not checkpoint_available(ck) and ck["from_row"] not in out.scheduled:
            where = f" or {ck['committed']}" if ck["committed"] else " (too big to come back: same session only)"
            out.skipped[rid] = f"waits for {ck['from_row']} (its checkpoint {ck['path']}{where})"
            continue
        est = row_estimate(row, dry_run=dry_run, done_here=set(done_here))
        if est > out.left_min + 1e-9:
            out.skipped[rid] = f"does not fit: needs ~{est:g} min, {out.left_min:g} min left"
            continue
        cost_files = 1 + len(as_list(row.get("artifacts")))
        if files_left is not None:
            if cost_files > files_left:
                out.skipped[rid] = "out folder file cap reached (run it in the next call)"
                continue
            files_left -= cost_files
        out.scheduled.append(rid)
        out.est[rid] = est
        out.left_min -= est
    return out


# ------------------------------------------------------------------------------------------------ checks
def get_path(obj: Any, path: list[Any] | str) -> Any:
    keys = path if isinstance(path, list) else str(path).split(".")
    for k in keys:
        if isinstance(obj, list) and isinstance(k, int):
            obj = obj[k]
        elif isinstance(obj, dict):
            obj = obj[k]
        else:
            raise KeyError(k)
    return obj


def evaluate_check(check: dict[str, Any], record: Any) -> dict[str, Any]:
    """``{"check": text, "met": bool | None, "actual": value, "expected": value}`` (``met`` None: not found)."""
    desc = check.get("desc") or f"{check['path']} {check['op']} {check.get('ref', check.get('value'))}"
    try:
        actual = get_path(record, check["path"])
        expected = (get_path(record, check["ref"]) + float(check.get("offset", 0.0))) if "ref" in check \
            else check["value"]
        met = bool(OPS[check["op"]](actual, expected))
    except (KeyError, IndexError, TypeError) as e:
        return {"check": desc, "met": None, "error": f"{type(e).__name__}: {e}"}
    return {"check": desc, "met": met, "actual": actual, "expected": expected}


# ------------------------------------------------------------------------------------------------ ledger edits
def set_row_fields(text: str, row_id: str, **values: Any) -> str:
    """Rewrite ``key: value`` lines of one row block in the ledger's text (comments elsewhere survive)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(rf"^  - id: {re.escape(row_id)}\s*$", ln)), None)
    if start is None:
        raise KeyError(f"row {row_id!r} not found in the ledger text")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^  - id: ", lines[i]) or
                re.match(r"^\S", lines[i])), len(lines))
    for key, value in values.items():
        rendered = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        if rendered.endswith("\n..."):
            rendered = rendered[:-4].strip()
        rendered = rendered.removesuffix("...").strip()
        for i in range(start, end):
            if re.match(rf"^    {key}:", lines[i]):
                lines[i] = f"    {key}: {rendered}\n"
                break
        else:
            raise KeyError(f"row {row_id!r} has no line '    {key}:'")
    return "".join(lines)


def expand(text: str, data_dir: str, runs_dir: str, quote: bool = False) -> str:
    """The ledger's literal ``~/cifar10`` and ``~/runs`` replaced by the folders of this invocation."""
    q = shlex.quote if quote else (lambda s: s)
    text = text.replace("~/cifar10", q(data_dir)).replace("~/runs", q(runs_dir))
    return os.path.expanduser(text) if not quote else text
