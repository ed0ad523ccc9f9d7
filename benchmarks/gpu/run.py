#!/usr/bin/env python3
"""The GPU runner: run the next pending rows of benchmarks/gpu/ledger.yaml that fit the device minutes left.

On the device (repo root, CIFAR-10 staged at ~/cifar10, see benchmarks/gpu/README.md for the exact calls):

    PYTHONPATH=src python benchmarks/gpu/run.py --budget-min 9 --commit <sha>      # results into $OUT

On the host, what it would run, and a CPU dry run of every row's smoke variant (synthetic data, tiny settings):

    .venv/bin/python benchmarks/gpu/run.py --plan-only --budget-min 9
    .venv/bin/python benchmarks/gpu/run.py --dry-run --out /tmp/gpu-dry [--rows loader-throughput-gpu,...]

Rows run in ledger order, greedily: each pending row whose needs are met (data, checkpoint: done on this machine,
committed, or produced by a row planned before it; wheel importable) and whose estimate fits the minutes still
unplanned. Each runs under ``timeout -s TERM`` (the scripts checkpoint on SIGTERM and resume when re-run on the
same warm machine) with PYTHONUNBUFFERED=1, ``python`` on PATH and PYTHONPATH=src (+ ~/pylib). The out folder
gets at most 8 files: ``runner-summary.json`` (rows, status, minutes, device, torch), ``runner.log`` (every row's
stdout+stderr, capped), one ``<row>.result.json`` per row (the JSON files the row wrote, checks against its
target, partial files when it was cut short) and the rows' artifacts (the slimmed ResNet-56 checkpoint).
Re-running skips rows whose result is already in the out folder or was finished on this machine (``~/runs``).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ledgerlib as L  # noqa: E402

MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
LOG_CAP_BYTES = 6 * 2**20
PARTIAL_MAX_BYTES = 2**20
KILL_AFTER_S = 15       # SIGKILL this long after the SIGTERM of a row's timeout (the Trainer checkpoints first)
GRACE_S = 30            # a row's timeout ends this long before the runner's deadline (kill + bookkeeping)
PLAN_SLACK_MIN = 0.1    # planning forgives the runner's own few seconds of start-up
SUMMARY = "runner-summary.json"
LOG = "runner.log"
ROW_SCHEMA = "prunekit.gpu-runner.row/1"
SUMMARY_SCHEMA = "prunekit.gpu-runner.summary/1"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ data
def synthetic_cifar(folder: Path, chunks: int = 2, per_chunk: int = 384, test: int = 128) -> Path:
    """A tiny CIFAR-10 in the npz layout (random pixels, balanced labels) + MANIFEST.sha256, for dry runs."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "MANIFEST.sha256").is_file():
        return folder
    rng = np.random.default_rng(0)
    names = [f"train_{i}.npz" for i in range(chunks)] + ["test.npz"]
    for name, n in zip(names, [per_chunk] * chunks + [test]):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        np.savez_compressed(folder / name, images=images, labels=labels)
    (folder / "MANIFEST.sha256").write_text("".join(f"{sha256(folder / n)}  {n}\n" for n in names))
    return folder


def verify_manifest(folder: Path) -> dict[str, Any]:
    """``{"state": "verified" | "absent" | "mismatch" | "missing", ...}`` for ``folder/MANIFEST.sha256``."""
    manifest = folder / "MANIFEST.sha256"
    if not manifest.is_file():
        return {"state": "absent", "detail": f"no {manifest}: checksums not verified"}
    bad, missing, n = [], [], 0
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(None, 1)
        name = name.strip().lstrip("*")
        n += 1
        if not (folder / name).is_file():
            missing.append(name)
        elif sha256(folder / name) != digest:
            bad.append(name)
    if missing:
        return {"state": "missing", "detail": f"files named by the manifest are missing: {missing}"}
    if bad:
        return {"state": "mismatch", "detail": f"sha256 mismatch: {bad}"}
    return {"state": "verified", "detail": f"{n} files match {manifest}"}


def data_problem(folder: Path, manifest: dict[str, Any], full: bool) -> str | None:
    if manifest["state"] in ("mismatch", "missing"):
        return f"CIFAR-10 at {folder}: {manifest['detail']}"
    chunks = sorted(folder.glob("train_*.npz"))
    if not (folder / "test.npz").is_file() or not chunks:
        return f"no CIFAR-10 at {folder} (train_*.npz + test.npz; stage it: benchmarks/gpu/README.md)"
    if full and len(chunks) < 5:
        return f"only {len(chunks)} of 5 training chunks at {folder}: a full run needs all of them"
    return None


# ------------------------------------------------------------------------------------------------ environment
def device_info(dry_run: bool) -> dict[str, Any]:
    name = None
    if not dry_run and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
            name = out.splitlines()[0].strip() if out else None
        except (OSError, subprocess.SubprocessError):
            name = None
    if name is None:
        name = platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"{name} ({os.cpu_count()} cores, no GPU used)"
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {"device": name, "torch": torch_version, "python": platform.python_version(),
            "host": platform.node()}


def git_commit(repo: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks",
                                "recipes"], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def slim_checkpoint(src: str, dst: str) -> None:
    """Copy a Trainer checkpoint without optimizer/scaler state (weights, meta, config, epoch, history kept)."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    for key in ("optimizer", "scaler"):
        if key in ckpt:
            ckpt[key] = None
    ckpt["slimmed"] = "optimizer and scaler state removed by benchmarks/gpu/run.py; not for resuming training"
    torch.save(ckpt, dst)


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


# ------------------------------------------------------------------------------------------------ the runner
class Runner:
    def __init__(self, args: argparse.Namespace, ledger: dict[str, Any]):
        self.args = args
        self.ledger = ledger
        self.by_id = L.rows_by_id(ledger)
        self.dry = args.dry_run
        self.t0 = time.time()
        self.deadline = self.t0 + args.budget_min * 60
        self.proc: subprocess.Popen | None = None
        self.terminated = False
        self.runs = Path(os.path.expanduser(args.runs_dir)).resolve()
        self.state = self.runs / ".gpu-runner"
        self.out = Path(os.path.expanduser(args.out)).resolve() if args.out else None
        self.cwd = Path(args.cwd).resolve() if args.cwd else L.REPO
        self.data = Path(os.path.expanduser(args.data_dir or "~/cifar10")).resolve()
        self.manifest: dict[str, Any] = {"state": "absent", "detail": "not checked yet"}
        self.pylib = Path(os.path.expanduser(args.pylib)).resolve()
        self.ckpt_dir = Path(os.path.expanduser(args.checkpoints_dir)).resolve()
        self.info = device_info(self.dry)
        self.commit = args.commit or git_commit(L.REPO)
        self.rows: dict[str, dict[str, Any]] = {}
        self._plan: dict[str, Any] | None = None
        self.log_bytes = 0

    # -------------------------------------------------------------- paths
    def expand(self, text: str, quote: bool = False) -> str:
        return L.expand(text, str(self.data), str(self.runs), quote=quote)

    def resolve(self, ledger_path: str) -> Path:
        p = Path(self.expand(ledger_path))
        return p if p.is_absolute() else self.cwd / p

    def committed(self, ck: dict[str, Any]) -> Path | None:
        if not ck.get("committed"):
            return None
        for p in (self.cwd / ck["committed"], self.ckpt_dir / Path(ck["committed"]).name):
            if p.is_file():
                return p
        return None

    # -------------------------------------------------------------- state
    def done_here(self) -> set[str]:
        done = set()
        for folder in filter(None, (self.out, self.state / "done")):
            for f in folder.glob("*.result.json") if folder.is_dir() else []:
                try:
                    rec = json.loads(f.read_text())
                except (OSError, ValueError):
                    continue
                if rec.get("status") == "done" and rec.get("dry_run") == self.dry:
                    done.add(rec["row"])
        return done

    def checkpoint_available(self, ck: dict[str, Any], done: set[str]) -> bool:
        return (ck["from_row"] in done and self.resolve(ck["path"]).is_file()) or self.committed(ck) is not None

    def wheel_ok(self, name: str) -> bool:
        paths = [str(self.pylib), str(self.cwd / "src")]
        return importlib.machinery.PathFinder.find_spec(name, paths) is not None or \
            importlib.util.find_spec(name) is not None

    def out_files(self) -> list[str]:
        return sorted(p.name for p in self.out.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if self.out and self.out.is_dir() else []

    def summary(self, finished: bool, plan: L.Plan | None = None) -> dict[str, Any]:
        s = {"schema": SUMMARY_SCHEMA, "started": dt.datetime.fromtimestamp(self.t0, dt.timezone.utc).isoformat(
                 timespec="seconds"), "updated": now_iso(), "finished": finished, "dry_run": self.dry,
             "budget_min": self.args.budget_min, "elapsed_min": round((time.time() - self.t0) / 60, 2),
             **self.info, "commit": self.commit, "ledger": str(self.args.ledger),
             "data": {"dir": str(self.data), "manifest": self.manifest}, "runs_dir": str(self.runs),
             "terminated": self.terminated}
        if plan is not None:
            self._plan = {"scheduled": plan.scheduled, "estimates_min": plan.est, "skipped": plan.skipped}
        s["plan"] = self._plan
        s["rows"] = list(self.rows.values())
        s["files"] = self.out_files()
        return s

    def write_summary(self, finished: bool = False, plan: L.Plan | None = None) -> None:
        if self.out is not None:
            write_json(self.out / SUMMARY, self.summary(finished, plan))

    def log(self, data: bytes) -> None:
        """Append to runner.log in the out folder, up to LOG_CAP_BYTES in all."""
        if self.out is None or self.log_bytes >= LOG_CAP_BYTES:
            return
        data = data[: LOG_CAP_BYTES - self.log_bytes]
        with open(self.out / LOG, "ab") as f:
            f.write(data)
        self.log_bytes += len(data)

    # -------------------------------------------------------------- setup
    def prepare(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "done").mkdir(exist_ok=True)
        (self.state / "logs").mkdir(exist_ok=True)
        shim = self.state / "bin"
        shim.mkdir(exist_ok=True)
        py = shim / "python"
        py.write_text(f"#!/bin/sh\nexec {shlex.quote(self.args.python or sys.executable)} \"$@\"\n")
        py.chmod(0o755)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            prev = self.out / SUMMARY
            if prev.is_file():  # resuming into the same out folder: keep the earlier rows' entries
                try:
                    for r in json.loads(prev.read_text()).get("rows", []):
                        self.rows[r["id"]] = r
                except (OSError, ValueError, KeyError):
                    pass
            if (self.out / LOG).is_file():
                self.log_bytes = (self.out / LOG).stat().st_size

    def env(self, row_id: str) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(self.cwd / "src")] + ([str(self.pylib)] if self.pylib.is_dir() else [])
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", GPU_RUNNER_ROW=row_id,
                   PATH=str(self.state / "bin") + os.pathsep + env.get("PATH", ""))
        if self.dry:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env.setdefault("OMP_NUM_THREADS", "1")  # a busy 2-core box: 1 thread per process is faster
        return env

    # -------------------------------------------------------------- one row
    def command_of(self, row: dict[str, Any]) -> tuple[str, str, list[str]]:
        spec = row["smoke"] if self.dry else row
        text = spec["command"]
        if "{smoke_recipe}" in text:
            rc = spec["recipe"]
            import yaml

            recipe = yaml.safe_load((self.cwd / rc["from"]).read_text())
            for key, value in (rc.get("set") or {}).items():
                set_dotted(recipe, key, value)
            path = self.state / "smoke-recipes" / f"{row['id']}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {rc['from']} shrunk for a dry run by benchmarks/gpu/run.py: {rc.get('set')}\n"
                            + yaml.safe_dump(recipe, sort_keys=False))
            text = text.replace("{smoke_recipe}", shlex.quote(str(path)))
        return text, self.expand(text, quote=True), L.as_list(spec["writes"])

    def run_row(self, row: dict[str, Any], est_min: float) -> dict[str, Any]:
        rid = row["id"]
        ledger_cmd, cmd, writes = self.command_of(row)
        ck = row["needs"]["checkpoint"]
        if ck is not None:
            target = self.resolve(ck["path"])
            src = self.committed(ck)
            if not (ck["from_row"] in self.done_here() and target.is_file()) and src is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
                self.say(f"[{rid}] checkpoint {target} <- {src}")
        timeout_s = max(1, int(self.deadline - time.time() - self.args.grace_s))
        entry: dict[str, Any] = {"id": rid, "status": "running", "est_min": est_min, "timeout_s": timeout_s,
                                 "command": cmd, "started": now_iso()}
        self.rows[rid] = entry
        self.write_summary()
        header = (f"\n===== row {rid} | {entry['started']} | timeout {timeout_s} s | est {est_min:g} min =====\n"
                  f"$ {cmd}\n")
        self.log(header.encode())
        print(header.strip(), flush=True)
        row_log = self.state / "logs" / f"{rid}.log"
        tail: collections.deque[str] = collections.deque(maxlen=60)
        start = time.time()
        with open(row_log, "wb") as rl:
            rl.write(header.encode())
            self.proc = subprocess.Popen(
                ["timeout", "-s", "TERM", "-k", str(self.args.kill_after_s), str(timeout_s), "bash", "-c", cmd],
                cwd=self.cwd, env=self.env(rid), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True)

            def pump(stream=self.proc.stdout):
                for line in iter(stream.readline, b""):
                    rl.write(line)
                    rl.flush()
                    self.log(line)
                    tail.append(line.decode(errors="replace").rstrip("\n"))
                    if self.args.echo:
                        sys.stdout.write(f"[{rid}] " + line.decode(errors="replace"))
                        sys.stdout.flush()

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                rc = self.proc.wait(timeout=timeout_s + self.args.kill_after_s + 15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                rc = self.proc.wait()
            reader.join(timeout=10)
            self.proc = None
        minutes = (time.time() - start) / 60
        files, stale = {}, []
        for w in writes:
            p = self.resolve(w)
            if p.is_file() and p.stat().st_mtime >= start - 1:
                try:
                    files[w] = json.loads(p.read_text())
                except ValueError as e:
                    stale.append(f"{w} (not JSON: {e})")
            else:
                stale.append(w)
        if rc == 0 and not stale:
            status, why = "done", None
        elif rc == 0:
            status, why = "failed", f"exit 0 but no fresh result file(s): {stale}"
        elif rc in (124, 137) or self.terminated:
            status, why = "interrupted", (f"cut at its timeout ({timeout_s} s)" if not self.terminated
                                          else "the runner was terminated") + \
                "; the row resumes from its run folder if re-run on this machine"
        else:
            status, why = "failed", f"exit status {rc}"
        bundle: dict[str, Any] = {
            "schema": ROW_SCHEMA, "row": rid, "title": row["title"], "status": status, "reason": why,
            "dry_run": self.dry, "rc": rc, "minutes": round(minutes, 2), "est_min": est_min,
            "timeout_s": timeout_s, "command": cmd, "ledger_command": ledger_cmd, "cwd": str(self.cwd),
            "started": entry["started"], "ended": now_iso(), "device": self.info["device"],
            "torch": self.info["torch"], "commit": self.commit, "files": files, "partial": {}, "checks": [],
            "artifacts": [], "log_tail": list(tail)}
        if status == "done" and not self.dry:
            bundle["checks"] = [dict(L.evaluate_check(c, files[c["file"]]), file=c["file"])
                                for c in L.as_list(row["check"]) if c["file"] in files]
        if status != "done":
            for pat in L.as_list(row.get("partial")):
                p = self.resolve(pat)
                if p.is_file() and p.stat().st_size <= PARTIAL_MAX_BYTES:
                    text = p.read_text(errors="replace")
                    try:
                        bundle["partial"][pat] = json.loads(text) if p.suffix == ".json" else text
                    except ValueError:
                        bundle["partial"][pat] = text
        if status == "done":
            bundle["artifacts"] = [self.artifact(rid, a) for a in L.as_list(row.get("artifacts"))]
        path = self.out / f"{rid}.result.json"
        write_json(path, bundle)
        if path.stat().st_size > MAX_FILE_BYTES:  # never expected: results are small JSON files
            bundle["files"] = {k: "omitted: the bundle exceeded 16 MiB" for k in files}
            write_json(path, bundle)
        if status == "done":
            shutil.copy2(path, self.state / "done" / path.name)
        entry.update(status=status, reason=why, rc=rc, minutes=round(minutes, 2), result=path.name,
                     ended=bundle["ended"], artifacts=[a.get("as") for a in bundle["artifacts"] if a.get("bytes")],
                     checks=bundle["checks"])
        footer = f"===== row {rid}: {status} (rc {rc}) in {minutes:.2f} min{'; ' + why if why else ''} =====\n"
        self.log(footer.encode())
        print(footer.strip(), flush=True)
        if status != "done":
            print("\n".join(f"  | {t}" for t in list(tail)[-15:]), flush=True)
        self.write_summary()
        return entry

    def artifact(self, rid: str, spec: dict[str, Any]) -> dict[str, Any]:
        src = self.resolve(spec["path"])
        dst = self.out / spec["as"]
        info: dict[str, Any] = {"path": spec["path"], "as": spec["as"], "slim": bool(spec.get("slim"))}
        if not src.is_file():
            return dict(info, error=f"{src} does not exist")
        tmp = self.out / f".{spec['as']}.tmp"
        try:
            if spec.get("slim"):
                subprocess.run([self.args.python or sys.executable, str(Path(__file__).resolve()),
                                "--slim-checkpoint", str(src), str(tmp)], check=True, env=self.env(rid),
                               capture_output=True, text=True, timeout=300)
            else:
                shutil.copy2(src, tmp)
        except subprocess.CalledProcessError as e:
            tmp.unlink(missing_ok=True)
            return dict(info, error=f"slimming failed: {e.stderr.strip().splitlines()[-1:] or e}")
        size = tmp.stat().st_size
        if size > MAX_FILE_BYTES:
            tmp.unlink()
            return dict(info, error=f"{size / 2**20:.1f} MiB: too big to come back (16 MiB per file)")
        tmp.replace(dst)
        return dict(info, bytes=size, sha256=sha256(dst))

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log((text + "\n").encode())

    # -------------------------------------------------------------- main loop
    def on_signal(self, signum, frame) -> None:
        self.terminated = True
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def make_plan(self, budget_min: float, exclude: dict[str, str] | None = None) -> L.Plan:
        done = self.done_here()
        files_left = None
        if self.out is not None:
            ours = {SUMMARY, LOG}
            others = [f for f in self.out_files() if f not in ours]
            files_left = self.args.max_files - len(ours) - len(others)
        only = [x for x in self.args.rows.split(",") if x] if self.args.rows else None
        problem = None if self.args.plan_only and not self.data.exists() else \
            data_problem(self.data, self.manifest, full=not self.dry)
        return L.plan(self.ledger, budget_min, dry_run=self.dry, only=only, done_here=done,
                      checkpoint_available=lambda ck: self.checkpoint_available(ck, done), wheel_ok=self.wheel_ok,
                      data_ok=lambda: problem, files_left=files_left, exclude=exclude)

    def minutes_left(self) -> float:
        """Minutes to plan with now (the runner's own start-up of a few seconds forgiven)."""
        return max(0.0, (self.deadline - time.time()) / 60 + PLAN_SLACK_MIN)

    def run(self) -> int:
        self.manifest = verify_manifest(self.data) if self.data.is_dir() else \
            {"state": "absent", "detail": f"{self.data} does not exist"}
        plan = self.make_plan(self.args.budget_min)
        print(f"budget {self.args.budget_min:g} min · data {self.data} ({self.manifest['state']}) · "
              f"{self.info['device']} · torch {self.info['torch']}" + (" · DRY RUN (CPU smoke variants)"
                                                                        if self.dry else ""), flush=True)
        for rid in plan.scheduled:
            print(f"  run   {rid:36s} ~{plan.est[rid]:g} min", flush=True)
        for rid, why in plan.skipped.items():
            print(f"  skip  {rid:36s} {why}", flush=True)
        if self.args.plan_only:
            return 0
        self.write_summary(plan=plan)
        # Re-plan before every row with the minutes really left: a row that fails fast or ends early frees its
        # minutes for the next rows that fit; one that overran pushes later rows out.
        attempted: dict[str, str] = {}
        failed = 0
        while not self.terminated:
            now_plan = self.make_plan(self.minutes_left(), exclude=attempted)
            if not now_plan.scheduled:
                break
            rid = now_plan.scheduled[0]
            entry = self.run_row(self.by_id[rid], now_plan.est[rid])
            attempted[rid] = f"attempted in this call: {entry['status']}"
            failed += entry["status"] != "done"
        final = self.make_plan(self.minutes_left(), exclude=attempted)
        self._plan["run_order"] = list(attempted)
        self._plan["skipped_at_end"] = final.skipped
        self.write_summary(finished=True)
        print(f"runner: {len(attempted)} row(s) run, "
              f"{sum(self.rows[r]['status'] == 'done' for r in attempted)} done, "
              f"{(time.time() - self.t0) / 60:.2f} min; files: {self.out_files()}", flush=True)
        return 1 if failed or self.terminated else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--budget-min", type=float, default=None,
                    help="device minutes left for compute (required unless --dry-run: default 30 CPU minutes)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="out folder (default $OUT; at most 8 files)")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 npz folder (default ~/cifar10; dry run: synthetic)")
    ap.add_argument("--runs-dir", default=None,
                    help="run folders and runner state (default ~/runs; dry run: a new temporary folder)")
    ap.add_argument("--pylib", default="~/pylib", help="extra import folder for carried pure-Python packages")
    ap.add_argument("--checkpoints-dir", default="~/checkpoints",
                    help="staged committed checkpoints (also looked up in benchmarks/checkpoints/)")
    ap.add_argument("--rows", default=None, help="comma-separated row ids (ledger order is kept)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU: run every selected row's smoke variant on synthetic data in a scratch copy of the repo")
    ap.add_argument("--plan-only", action="store_true", help="print the plan and exit")
    ap.add_argument("--ledger", default=str(L.LEDGER))
    ap.add_argument("--cwd", default=None, help="where commands run (default: the repo; dry run: a scratch copy)")
    ap.add_argument("--commit", default=None, help="the prunekit commit the device copy was made from")
    ap.add_argument("--python", default=None, help="interpreter behind `python` in the commands (default: this one)")
    ap.add_argument("--max-files", type=int, default=MAX_FILES)
    ap.add_argument("--echo", action=argparse.BooleanOptionalAction, default=None,
                    help="also print every row's output here (default: on, except in a dry run)")
    ap.add_argument("--grace-s", type=float, default=GRACE_S, help=argparse.SUPPRESS)
    ap.add_argument("--kill-after-s", type=int, default=KILL_AFTER_S, help=argparse.SUPPRESS)
    ap.add_argument("--slim-checkpoint", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.slim_checkpoint:
        return args
    if args.echo is None:
        args.echo = not args.dry_run
    if args.budget_min is None:
        if not args.dry_run:
            ap.error("--budget-min is required (device minutes left for compute)")
        args.budget_min = 30.0
    if args.out is None and not args.plan_only:
        ap.error("--out is required ($OUT is not set)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.slim_checkpoint:
        slim_checkpoint(*args.slim_checkpoint)
        return 0
    ledger = L.load(args.ledger)
    problems = L.validate(ledger, L.REPO if args.cwd is None else Path(args.cwd))
    if problems:
        print("ledger problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.runs_dir is None:
        args.runs_dir = tempfile.mkdtemp(prefix="gpu-dry-runs-") if args.dry_run else "~/runs"
    runner = Runner(args, ledger)
    if args.dry_run and not args.plan_only:
        if args.cwd is None:  # smoke outputs must never land in the real benchmarks/results
            scratch = runner.state / "repo"
            if scratch.exists():
                shutil.rmtree(scratch)
            for part in ("src", "benchmarks", "recipes"):
                shutil.copytree(L.REPO / part, scratch / part,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
            runner.cwd = scratch
        if args.data_dir is None:
            runner.data = synthetic_cifar(runner.state / "cifar10-synthetic")
    if not args.plan_only:
        runner.prepare()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, runner.on_signal)
    return runner.run()


if __name__ == "__main__":
    raise SystemExit(main())
