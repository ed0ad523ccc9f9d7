#!/usr/bin/env python3
"""Take what came back from a GPU runner call (a folder) into the repo: result JSONs, checkpoints, ledger status.

    .venv/bin/python benchmarks/gpu/collect.py /path/to/files_at        # then review `git diff` and commit

For every ``<row>.result.json`` with status ``done`` in the folder: each JSON file the row wrote is written to
``benchmarks/results/<name>`` (as the script wrote it; a ``versions.prunekit`` of ``unknown`` — the device copy has
no .git — is filled from the runner's ``--commit``, marked by ``versions.prunekit_from``), each artifact (e.g.
``resnet56_cifar10.ckpt``) is copied to ``benchmarks/checkpoints/``, and the ledger row becomes ``status: done``
with ``result:`` naming the files (``part_of`` rows follow their parent). Target checks are printed. Rows that
failed or were cut short are reported and left pending. Dry-run folders are refused (smoke results are never
records) unless ``--allow-dry-run`` with other ``--results-dir``/``--ledger`` paths (the runner's own test).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ledgerlib as L  # noqa: E402


def fill_commit(record: Any, commit: str | None) -> Any:
    if not commit or commit == "unknown":
        return record
    for rec in record if isinstance(record, list) else [record]:
        v = rec.get("versions") if isinstance(rec, dict) else None
        if isinstance(v, dict) and v.get("prunekit") in (None, "unknown"):
            v["prunekit"] = commit
            v["prunekit_from"] = "gpu runner --commit (the device copy has no .git)"
    return record


def collect(folder: Path, *, ledger_path: Path, results_dir: Path, checkpoints_dir: Path, allow_dry_run: bool,
            repo: Path = L.REPO) -> dict[str, Any]:
    summary_path = folder / "runner-summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    bundles = sorted(folder.glob("*.result.json"))
    if not bundles:
        raise SystemExit(f"{folder}: no <row>.result.json files (is this what a runner call returned?)")
    dry = summary.get("dry_run") or any(json.loads(b.read_text()).get("dry_run") for b in bundles)
    if dry and not allow_dry_run:
        raise SystemExit(f"{folder} holds a dry run (CPU smoke variants): nothing to collect")
    ledger = L.load(ledger_path)
    by_id = L.rows_by_id(ledger)
    text = ledger_path.read_text()
    report: dict[str, Any] = {"done": {}, "not_done": {}, "checks": {}, "artifacts": []}
    for b in bundles:
        bundle = json.loads(b.read_text())
        rid = bundle["row"]
        if rid not in by_id:
            report["not_done"][rid] = "not a row of this ledger"
            continue
        if bundle["status"] != "done":
            report["not_done"][rid] = f"{bundle['status']}: {bundle.get('reason')}"
            continue
        written = []
        for ledger_name, record in bundle["files"].items():
            dst = results_dir / Path(ledger_name).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(json.dumps(fill_commit(record, bundle.get("commit")), indent=2) + "\n")
            try:
                written.append(str(dst.resolve().relative_to(repo)))
            except ValueError:
                written.append(str(dst))
        for a in bundle.get("artifacts", []):
            src = folder / a["as"]
            if a.get("bytes") and src.is_file():
                checkpoints_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, checkpoints_dir / a["as"])
                report["artifacts"].append(str(checkpoints_dir / a["as"]))
        result = written[0] if len(written) == 1 else written
        text = L.set_row_fields(text, rid, status="done", result=result)
        report["done"][rid] = result
        report["checks"][rid] = bundle.get("checks", [])
        for child in ledger["rows"]:  # rows measured by this one
            if child.get("part_of") == rid:
                files = [w for w in L.as_list(child["writes"]) if w in bundle["files"]]
                mine = [x for x in written if Path(x).name in {Path(f).name for f in files}]
                text = L.set_row_fields(text, child["id"], status="done",
                                        result=mine[0] if len(mine) == 1 else mine)
                report["done"][child["id"]] = mine
                report["checks"][child["id"]] = [
                    dict(L.evaluate_check(c, bundle["files"][c["file"]]), file=c["file"])
                    for c in L.as_list(child["check"]) if c["file"] in bundle["files"]]
    new = yaml.safe_load(text)
    for rid in report["done"]:
        row = L.rows_by_id(new)[rid]
        assert L.status_word(row) == "done" and row["result"], f"ledger edit of {rid} did not take"
    ledger_path.write_text(text)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the files that came back (the run tool's files_at)")
    ap.add_argument("--ledger", type=Path, default=L.LEDGER)
    ap.add_argument("--results-dir", type=Path, default=L.REPO / "benchmarks" / "results")
    ap.add_argument("--checkpoints-dir", type=Path, default=L.REPO / "benchmarks" / "checkpoints")
    ap.add_argument("--allow-dry-run", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.allow_dry_run and (args.results_dir.resolve() == (L.REPO / "benchmarks" / "results").resolve()
                               or args.ledger.resolve() == L.LEDGER.resolve()):
        ap.error("--allow-dry-run only with another --results-dir and --ledger (smoke outputs are never records)")
    rep = collect(args.folder, ledger_path=args.ledger, results_dir=args.results_dir,
                  checkpoints_dir=args.checkpoints_dir, allow_dry_run=args.allow_dry_run)
    for rid, res in rep["done"].items():
        print(f"done     {rid}: {res}")
        for c in rep["checks"].get(rid, []):
            mark = {True: "MET    ", False: "NOT MET", None: "UNKNOWN"}[c["met"]]
            print(f"         {mark} {c['check']}: actual {c.get('actual', c.get('error'))}, "
                  f"expected {c.get('expected')}")
    for rid, why in rep["not_done"].items():
        print(f"not done {rid}: {why}")
    for a in rep["artifacts"]:
        print(f"artifact {a} (*.ckpt is git-ignored: `git add -f` to commit it, or stage it: README.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
