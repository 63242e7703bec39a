#!/usr/bin/env bash
# The GPU measurements of benchmarks/README.md, for a machine with one NVIDIA GPU and no network.
#
#   bash benchmarks/gpu_session.sh carry    # here, with network, first: builds .device/ and .whl/ below
#   bash benchmarks/gpu_session.sh speed    # imports, attention kernels, then cold and warm compile cache,
#                                           # warm in a Python started ahead as the lab does, and after an
#                                           # edit of the model, beside a reference train.py (~7 min on an
#                                           # H200 host, estimated: 5.4 min measured before the edit's run)
#   bash benchmarks/gpu_session.sh corpus   # the big offline corpus prepared there (the profile's
#                                           # evaluation, lowered to fit: millions of tokens), a run on
#                                           # it, and the checks run: syncs per step, the lab's evaluator
#                                           # (2.3 min)
#   bash benchmarks/gpu_session.sh tests    # the GPU variants of the tests, and the loss head's memory (~2 min)
# Several modes run one after another in one call (`tests speed`: ~9 min), which saves a machine's
# start and the gap between calls, after which an idle machine goes back. A start (~1.5 min) and all
# three fit in 15 minutes of GPU time.
#
# What it expects beside the checkout (both kept out of git):
#   .device/cache_h100_30      an h100-profile cache prepared beforehand with
#       AUTORESEARCH_CACHE=.device/cache_h100_30 uv run prepare.py --profile h100 --time-budget 30
#   (its evaluation lowered to what the stdlib's validation split holds: 249,856 tokens with Python 3.11.7)
#   .device/reference_train.py the train.py to measure beside the current one, e.g.
#       git show c566324:train.py > .device/reference_train.py    (before the host-sync changes)
#   .whl/                      wheels that machine's Python may lack (rustbpe and tqdm, to prepare the big
#                              corpus; pytest, for the GPU variants of the tests)
# Logs and tables go to $OUT (default /tmp/gpu_session); compile caches stay in /tmp/gpu_compile, so a
# second call on the same machine starts warm.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
modes=("${@:-speed}")
for mode in "${modes[@]}"; do
  case "$mode" in
    carry|speed|corpus|tests) ;;
    *) echo "usage: bash benchmarks/gpu_session.sh carry | [speed] [corpus] [tests]" >&2; exit 2 ;;
  esac
done
if [[ " ${modes[*]} " == *" carry "* && ${#modes[@]} -gt 1 ]]; then
  echo "carry runs here, alone; then the other modes there" >&2; exit 2
fi
if [ "${modes[0]}" != carry ] && compgen -G ".whl/*.whl" > /dev/null; then  # there, not here
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export AUTORESEARCH_CACHE=${AUTORESEARCH_CACHE:-.device/cache_h100_30}
BIG=/tmp/cache_big
if [ "${modes[0]}" != carry ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  # torch's bytecode: where it is not cached (and PYTHONDONTWRITEBYTECODE may forbid writing it), keep
  # it in /tmp/pyc, as `uv sync --compile-bytecode` would for a user; the first run writes it
  pyc=$($PY -c "import importlib.util as u, os; print(os.path.exists(u.cache_from_source(u.find_spec('torch').origin)))")
  echo "torch bytecode cached: $pyc | PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}" | tee -a "$OUT/gpu.txt"
  if [ "$pyc" != True ]; then
    unset PYTHONDONTWRITEBYTECODE
    export PYTHONPYCACHEPREFIX=/tmp/pyc
  fi
fi

tests_failed=0
for mode in "${modes[@]}"; do
case "$mode" in
  carry)
    mkdir -p .device .whl
    uv run prepare.py --source python --profile h100 --time-budget 30 --force
    git show "${REFERENCE:-c566324}:train.py" > .device/reference_train.py
    python3 -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
      --platform manylinux2014_x86_64 -d .whl rustbpe tqdm pytest pluggy iniconfig packaging pygments
    du -sh .device .whl
    echo 'now: run with carry [".device", ".whl"] and command: OUT=$OUT bash benchmarks/gpu_session.sh tests speed'
    ;;
  speed)
    # what the lab's Python started ahead (while the agent works) saves each experiment on this host
    for i in 1 2; do
      $PY -c "import time; t0 = time.time(); import numpy, tiktoken, torch; t1 = time.time(); torch.cuda.init()
t2 = time.time(); import torch._dynamo, torch._inductor.compile_fx, torch.nn.attention.flex_attention
t3 = time.time(); from torch._inductor.codecache import CacheBase, torch_key; CacheBase.get_system(); torch_key()
print(f'imports: numpy, tiktoken, torch {t1 - t0:.2f} s | CUDA context {t2 - t1:.2f} s | compiler {t3 - t2:.2f} s', end=' | ')
print(f'compile cache keys {time.time() - t3:.2f} s')" | tee -a "$OUT/imports.md" || true
    done
    $PY benchmarks/attention.py | tee "$OUT/attention.md"
    $PY benchmarks/gpu.py --only cold,warm,ahead,edit --before .device/reference_train.py --compile-cache /tmp/gpu_compile \
      --out "$OUT" | tee "$OUT/speed.md"
    ;;
  corpus)
    start=$(date +%s)
    AUTORESEARCH_CACHE=$BIG $PY prepare.py --source python --include-site-packages --profile h100 \
      --time-budget 30 > "$OUT/prepare_big.log" 2>&1 || { tail -20 "$OUT/prepare_big.log"; exit 1; }
    grep -E "^(documents|tokenizer|tokens|evaluation):|^prepared " "$OUT/prepare_big.log" | tee "$OUT/corpus.md"
    echo "prepare wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/corpus.md"
    $PY benchmarks/gpu.py --only big,check --big-cache $BIG --compile-cache /tmp/gpu_compile --out "$OUT" \
      | tee -a "$OUT/corpus.md"
    ;;
  tests)
    # a failing test is reported, and the measurements after it still run: device time is scarce
    $PY -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_evaluator.py -k cuda 2>&1 | tee "$OUT/tests.txt" || {
      tests_failed=1
      echo "GPU TESTS FAILED (above, and in $OUT/tests.txt); the measurements go on" | tee -a "$OUT/tests.txt"; }
    $PY benchmarks/loss_memory.py | tee "$OUT/loss_memory.md"
    ;;
esac
done
exit $tests_failed  # the GPU tests' verdict, after every measurement asked for
