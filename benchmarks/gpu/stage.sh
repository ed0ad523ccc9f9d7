#!/usr/bin/env bash
# Prepare the ignored folder .stage/ for device call N (1, 2, 3) and print that call's command and carry list.
#
#   benchmarks/gpu/stage.sh 1                    # train_0 + train_1, torch_pruning -> ~/pylib, staged checkpoints
#   benchmarks/gpu/stage.sh 2                    # train_2 + train_3
#   benchmarks/gpu/stage.sh 3 --budget-min 9     # train_4 + test + MANIFEST, sha256sum -c, then the runner
#   benchmarks/gpu/stage.sh clean                # remove .stage/
#
# A device call carries at most 64 MiB (working tree + carried paths); each CIFAR-10 npz chunk is ~27 MiB, so the
# six files take three calls, back to back (the machine keeps ~/cifar10 only while it stays warm). See README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="${CIFAR10_DIR:-$REPO/../shared/data/cifar10}"
TP_SRC="${TORCH_PRUNING_DIR:-$(ls -d "$REPO"/.venv/lib/python3*/site-packages/torch_pruning 2>/dev/null | head -1)}"
CALL="${1:-}"
shift || true
BUDGET=9
while [ $# -gt 0 ]; do
  case "$1" in
    --budget-min) BUDGET="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cd "$REPO"
mkdir -p .git/info && { grep -qxF /.stage/ .git/info/exclude 2>/dev/null || echo /.stage/ >> .git/info/exclude; }

case "$CALL" in
  clean) rm -rf .stage; echo "removed .stage/"; exit 0 ;;
  1) FILES="train_0.npz train_1.npz" ;;
  2) FILES="train_2.npz train_3.npz" ;;
  3) FILES="train_4.npz test.npz MANIFEST.sha256" ;;
  *) echo "usage: $0 1|2|3 [--budget-min M]|clean" >&2; exit 2 ;;
esac

rm -rf .stage
mkdir -p .stage/data
for f in $FILES; do cp "$DATA/$f" .stage/data/; done

if [ "$CALL" = 1 ]; then
  if [ -n "$TP_SRC" ] && [ -d "$TP_SRC" ]; then
    mkdir -p .stage/pylib && cp -r "$TP_SRC" .stage/pylib/
    find .stage/pylib -name __pycache__ -prune -exec rm -rf {} +
  else
    echo "warning: no torch_pruning package found (set TORCH_PRUNING_DIR): rows that need it will be skipped" >&2
  fi
  # committed checkpoints travel with the working tree; untracked (git-ignored *.ckpt) ones are staged here
  for c in benchmarks/checkpoints/*.ckpt; do
    [ -f "$c" ] || continue
    if ! git ls-files --error-unmatch "$c" >/dev/null 2>&1; then mkdir -p .stage/checkpoints && cp "$c" .stage/checkpoints/; fi
  done
fi

STAGE_KB=$(du -sk .stage | cut -f1)
TREE_KB=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
TOTAL_MIB=$(( (STAGE_KB + TREE_KB) / 1024 ))
echo "# .stage: $((STAGE_KB / 1024)) MiB; working tree: $((TREE_KB / 1024)) MiB; this call carries ~${TOTAL_MIB} MiB (limit 64)" >&2
if [ "$TOTAL_MIB" -ge 64 ]; then echo "error: over the 64 MiB a call may carry" >&2; exit 1; fi

case "$CALL" in
  1) CMD='mkdir -p ~/cifar10 ~/pylib ~/checkpoints ~/runs && cp .stage/data/* ~/cifar10/ && { [ ! -d .stage/pylib ] || cp -r .stage/pylib/. ~/pylib/; } && { [ ! -d .stage/checkpoints ] || cp .stage/checkpoints/* ~/checkpoints/; } && ls -l ~/cifar10 ~/pylib ~/checkpoints && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv'
     TIMEOUT=300 ;;
  2) CMD='mkdir -p ~/cifar10 && cp .stage/data/* ~/cifar10/ && ls -l ~/cifar10'
     TIMEOUT=300 ;;
  3) case "$BUDGET" in *[!0-9.]*|'') echo "--budget-min must be a number" >&2; exit 2 ;; esac
     if awk "BEGIN{exit !($BUDGET > 9)}"; then echo "--budget-min at most 9 (one device command runs <= 10 min)" >&2; exit 2; fi
     T=$(awk "BEGIN{printf \"%d\", $BUDGET * 60 + 30}")
     TIMEOUT=$((T + 25)); [ "$TIMEOUT" -gt 600 ] && TIMEOUT=600
     SHA="$(git rev-parse HEAD)$( [ -z "$(git status --porcelain --untracked-files=no -- src benchmarks recipes)" ] || echo -dirty)"
     CMD="mkdir -p ~/cifar10 && cp .stage/data/* ~/cifar10/ && (cd ~/cifar10 && sha256sum -c MANIFEST.sha256) && PY=\$(command -v python || command -v python3) && PYTHONPATH=src timeout -s TERM -k 15 $T \$PY benchmarks/gpu/run.py --budget-min $BUDGET --commit $SHA"
     ;;
esac

echo "device call $CALL:"
echo "  command:   $CMD"
echo '  carry:     [".stage"]'
echo "  timeout_s: $TIMEOUT"
