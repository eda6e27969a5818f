#!/usr/bin/env bash
# `make setup`: install what is missing, nothing else. Idempotent; safe to run again and again.
#   1. Debian packages (mosquitto, PostgreSQL 15, a Java 17 JDK, Maven, chromium): installed when missing
#      if we are root, otherwise the exact apt command is printed and setup stops.
#   2. .venv with the project installed (pip install -e '.[dev]'), redone only when pyproject.toml
#      changed (its hash is stamped in .venv/.fleetsim-pyproject.sha256).
#   3. JVM jars from Maven Central into .cache/jvm (Kafka broker; Spark's Kafka connector matching
#      the pinned pyspark), resolved only when missing or when fleetsim/jvm/pom.xml changed.
#   4. Fleetsim's Spark extension (fleetsim/jvm/src) compiled into .cache/jvm/spark-ext against
#      pyspark's jars, rebuilt only when its sources or pyspark changed.
# Nothing is fetched at run time: after this, the stack and the tests run offline.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-python3.11}
VENV=$ROOT/.venv
JVM_DIR=$ROOT/.cache/jvm
POM=$ROOT/fleetsim/jvm/pom.xml

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ------------------------------------------------------------------ 1. Debian packages
# package -> a file it provides (what we actually use)
declare -A PROVIDES=(
  [mosquitto]=/usr/sbin/mosquitto
  [mosquitto-clients]=/usr/bin/mosquitto_sub
  [postgresql-15]=/usr/lib/postgresql/15/bin/postgres
  [openjdk-17-jdk-headless]=/usr/lib/jvm/java-17-openjdk-amd64/bin/javac
  [maven]=/usr/bin/mvn
  [chromium]=/usr/bin/chromium
)
missing=()
for pkg in mosquitto mosquitto-clients postgresql-15 openjdk-17-jdk-headless maven chromium; do
  [[ -e ${PROVIDES[$pkg]} ]] || missing+=("$pkg")
done
if ! command -v "$PY" >/dev/null 2>&1; then
  missing+=(python3.11 python3.11-venv)
  PY=/usr/bin/python3.11
elif ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3.11-venv)
fi
if ((${#missing[@]})); then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    say "missing Debian packages: ${missing[*]}"
    say "run as root:  sudo sh -c '$cmd'"
    die "then run \`make setup\` again"
  fi
  say "installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The packages may start system-wide instances on the default ports (1883, 5432); Fleetsim runs
  # its own private ones, so stop what we just installed (no-op without systemd).
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    for unit in mosquitto postgresql; do
      if [[ " ${missing[*]} " == *" ${unit}"* ]]; then
        systemctl disable --now "$unit" >/dev/null 2>&1 && say "stopped and disabled the system $unit service" || true
      fi
    done
  fi
else
  say "Debian packages: all present"
fi

# ------------------------------------------------------------------ 2. virtualenv
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || die "$PY is not Python 3.11 (set PY=/path/to/python3.11)"
want=$(sha "$ROOT/pyproject.toml")
stamp=$VENV/.fleetsim-pyproject.sha256
if [[ ! -x $VENV/bin/python ]]; then
  say "creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
if [[ ! -f $stamp || $(cat "$stamp") != "$want" || ! -x $VENV/bin/fleetsim ]]; then
  say "installing the project and its dependencies into .venv (pip install -e '.[dev]'; a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  log=$VENV/pip-install.log
  # Progress: one line per package pip collects; the full output goes to the log.
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT[dev]" 2>"$log.err" \
      | tee "$log" | grep --line-buffered -E '^(Collecting|Successfully installed)'; then
    [[ ${PIPESTATUS[0]} -eq 0 ]] || { tail -20 "$log.err" >&2; die "pip install failed (full log: $log)"; }
  fi
  "$VENV/bin/python" -c 'import fleetsim, pyspark, kafka, paho.mqtt, psycopg2' \
    || die "the virtualenv is incomplete; see pip's output above"
  echo "$want" >"$stamp"
else
  say "virtualenv: up to date with pyproject.toml"
fi

# ------------------------------------------------------------------ 3. JVM jars
pom_hash=$(sha "$POM")
resolve() {  # profile, output dir, marker jar glob, description
  local profile=$1 out=$2 marker=$3 what=$4
  local stampfile=$out/.pom.sha256
  if [[ -f $stampfile && $(cat "$stampfile") == "$pom_hash" ]] && compgen -G "$out/$marker" >/dev/null; then
    say "$what: present in ${out#"$ROOT"/}"
    return
  fi
  say "$what: resolving from Maven Central into ${out#"$ROOT"/} ..."
  rm -rf "$out.tmp"
  local log=$JVM_DIR/mvn-$profile.log
  if ! mvn -B -q -Dstyle.color=never -s "$ROOT/scripts/maven-settings.xml" -f "$POM" -P "$profile" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out.tmp" >"$log" 2>&1; then
    tail -20 "$log" >&2
    die "mvn failed to resolve $what (is Maven Central reachable? full log: $log)"
  fi
  compgen -G "$out.tmp/$marker" >/dev/null || die "$what: $marker missing after mvn"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  echo "$pom_hash" >"$stampfile"
  say "$what: $(find "$out" -name '*.jar' | wc -l) jars, $(du -sh "$out" | cut -f1)"
}
command -v mvn >/dev/null || die "mvn not found after the package step"
mkdir -p "$JVM_DIR"
resolve kafka "$JVM_DIR/kafka" 'kafka_2.13-*.jar' "Kafka broker jars (1/2)"
resolve spark-kafka "$JVM_DIR/spark-kafka" 'spark-sql-kafka-0-10_2.13-*.jar' "Spark Kafka connector jars (2/2)"

# ------------------------------------------------------------------ 4. Spark extension
EXT_DIR=$JVM_DIR/spark-ext
ext_hash=$( (cd "$ROOT" && find fleetsim/jvm/src -name '*.java' | sort | xargs sha256sum; \
  "$VENV/bin/python" -c 'import pyspark; print(pyspark.__version__)') | sha256sum | cut -d' ' -f1)
if [[ -f $EXT_DIR/.src.sha256 && $(cat "$EXT_DIR/.src.sha256") == "$ext_hash" && -f $EXT_DIR/fleetsim-spark-ext.jar ]]; then
  say "Spark extension: present in ${EXT_DIR#"$ROOT"/}"
else
  say "Spark extension: compiling fleetsim/jvm/src into ${EXT_DIR#"$ROOT"/} ..."
  pyspark_jars=$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
  rm -rf "$EXT_DIR"
  "$ROOT/scripts/build-spark-ext.sh" "$pyspark_jars" "$EXT_DIR" || die "compiling the Spark extension failed"
  echo "$ext_hash" >"$EXT_DIR/.src.sha256"
fi

say "done. Next: \`make demo\` (start the stack) or \`make test\`."
