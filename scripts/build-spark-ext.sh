#!/usr/bin/env bash
# Compile Fleetsim's Spark extension (fleetsim/jvm/src: the windowed flow's deduplication,
# io.fleetsim.spark.ReadingDedup) into <out dir>/fleetsim-spark-ext.jar against the Spark jars in
# <spark jars dir> (pyspark's own `jars` directory for the local stack; Spark's API jars resolved
# by Maven in the Docker build). Needs javac (openjdk-17-jdk-headless).
#   scripts/build-spark-ext.sh <spark jars dir> <out dir>
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 <spark jars dir> <out dir>" >&2; exit 2; }
cd "$(dirname "$0")/.."
spark_jars=$1
out=$2
command -v javac >/dev/null || { echo "javac not found: install openjdk-17-jdk-headless" >&2; exit 1; }
compgen -G "$spark_jars/spark-sql_*.jar" >/dev/null || { echo "no spark-sql jar in $spark_jars" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t sources < <(find fleetsim/jvm/src -name '*.java' | sort)
javac --release 17 -nowarn -encoding UTF-8 -cp "$spark_jars/*" -d "$work/classes" "${sources[@]}"
mkdir -p "$out"
jar_tool=$(dirname "$(readlink -f "$(command -v javac)")")/jar
"$jar_tool" --create --file "$work/fleetsim-spark-ext.jar" -C "$work/classes" .
mv "$work/fleetsim-spark-ext.jar" "$out/fleetsim-spark-ext.jar"
