#!/usr/bin/env bash
# Fresh machine -> ULTRA-HSTU trained on MovieLens-100k on CPU, eval NE printed.
# Extra arguments go to `ultra-hstu train`, e.g. --gin-param 'train_loop.num_batches=3'.
# pip's output: .venv/install.log; torchrec/fbgemm/GR logs: runs/ml100k_ultra_hstu/host.log.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/install
.venv/bin/ultra-hstu data prepare movielens-100k --out data
.venv/bin/ultra-hstu train --gin gin_configs/ml100k_smoke_cpu.gin --device cpu --mode train-eval "$@"
