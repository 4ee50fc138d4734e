#!/bin/bash
# Packs into .gpu/ what the whole pipeline needs on a lent GPU machine that has Python, torch and OpenCV but no
# Java and no Kafka clients (and no network): a JRE cut down with jlink, the broker's jars (each unpacked, natives of
# other platforms removed, all in one .tar.xz: xz packs class files far tighter than each jar's deflate) and the
# Python wheels the worker, camera and gate need beyond that machine's packages. ~46 MB, under the 64 MiB a call
# may carry. Run `make setup` first (the jars come from Maven Central through it). Usage: bench/device/bundle.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY_VERSION:-3.12}
KAFKA=$(.venv/bin/python -c "from streams.settings import Settings; print(Settings().kafka_version)")
LIBS=${XDG_CACHE_HOME:-$HOME/.cache}/defectstream/kafka-$KAFKA/libs
[ -f "$LIBS/.complete" ] || { echo "no Kafka jars at $LIBS: run make setup first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf .gpu && mkdir -p .gpu/whl
# Kafka's jars need no more than these modules (jdeps cannot resolve its modular jars on a class path).
jlink --add-modules java.base,java.desktop,java.instrument,java.logging,java.management,java.management.rmi,\
java.naming,java.prefs,java.rmi,java.scripting,java.security.jgss,java.security.sasl,java.sql,java.transaction.xa,\
java.xml,jdk.crypto.ec,jdk.management,jdk.naming.dns,jdk.security.auth,jdk.unsupported,jdk.zipfs,jdk.jfr,\
jdk.management.jfr,jdk.jcmd,jdk.attach \
    --strip-debug --no-man-pages --no-header-files --compress=0 --output "$work/jre/jre"
tar cf - -C "$work/jre" jre | xz -6 -T2 > .gpu/jre.tar.xz
mkdir "$work/jars"
for jar in "$LIBS"/*.jar; do
    mkdir "$work/jars/$(basename "$jar")"
    (cd "$work/jars/$(basename "$jar")" && unzip -q "$jar")
done
find "$work/jars" \( -name '*.so' -o -name '*.dll' -o -name '*.dylib' -o -name '*.jnilib' -o -name '*.a' \) |
    grep -v -i -E 'linux/(amd64|x86_64)/' | xargs -r rm -f
tar cf - -C "$work/jars" . | xz -6 -T2 > .gpu/kafka-trees.tar.xz
# Versions as in this virtualenv; the GPU machine already has aiohttp, yarl, click, numpy, torch, OpenCV and the rest.
pins=$(.venv/bin/python - <<'PY'
from importlib.metadata import version
names = ["faust-streaming", "aiohttp-cors", "aiokafka", "mode-streaming", "terminaltables", "croniter", "venusian",
         "intervaltree", "colorlog", "pytz", "async-timeout", "confluent-kafka", "jsonschema-rs"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/whl $pins
du -sh .gpu
