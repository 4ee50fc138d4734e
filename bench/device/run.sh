#!/bin/bash
# The whole pipeline on a GPU machine without Java, Kafka clients or network: unpacks what bench/device/bundle.sh
# packed into .gpu/ (JRE, broker jars, wheels), then runs bench.e2e_bench with the local broker, the worker on CUDA
# (torch FP16; a random-init ResNet-50 + attention, the stand-in's architecture) and the camera and gate.
# Usage, from the repository root: bench/device/run.sh [bench.e2e_bench args]; SKIP_SETUP=1 for a second run.
set -u
t0=$(date +%s)
OUT=${OUT:-bench/results}  # the device tool sets OUT to the folder it brings back
mkdir -p "$OUT" && OUT=$(CDPATH= cd -- "$OUT" && pwd -P) || exit 1
stamp=$(date +%H%M%S)  # pairs the bench log with its workers' logs
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 JAVA_HOME=/tmp/jre/jre
if [ -z "${SKIP_SETUP:-}" ]; then
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
mkdir -p /tmp/jre /tmp/kx && tar xJf .gpu/jre.tar.xz -C /tmp/jre && tar xJf .gpu/kafka-trees.tar.xz -C /tmp/kx || exit 1
python3 bench/device/rezip.py /tmp/kx "$(python3 -c 'from streams.kafka.broker import jar_dir; from streams.settings import Settings; print(jar_dir(Settings()))')" || exit 1
echo "setup $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc; $JAVA_HOME/bin/java -version 2>&1 | head -1
python3 -c "import torch, faust, confluent_kafka; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'faust', faust.__version__, 'librdkafka', confluent_kafka.libversion()[0])" || exit 1
python3 bench/device/make_model.py /tmp/model.pt || exit 1
fi
export DEFECTSTREAM_MAX_BATCHES_IN_FLIGHT=${DEFECTSTREAM_MAX_BATCHES_IN_FLIGHT:-12}
# -k: the bench stops its workers and broker on SIGTERM; if that hangs, it is killed two minutes later.
timeout -k 120 ${BENCH_TIMEOUT:-400} python3 -m bench.e2e_bench --model /tmp/model.pt --out "$OUT" "$@" 2>&1 | tee "$OUT/e2e-$stamp.log"
echo "bench rc ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
# One archive for the workers' logs: the device tool brings back at most 8 files, and 6 workers' logs would crowd out
# the JSON (as they did on 2026-11-27).
run_dir="$(python3 -c 'from streams.settings import Settings; print(Settings().cache_dir)')/run"
(cd "$run_dir" && tar czf "$OUT/e2e-workers-$stamp.tgz" e2e-worker-*.log && rm -f e2e-worker-*.log) || echo "no worker logs archived"
ls "$OUT"
