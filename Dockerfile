# syntax=docker/dockerfile:1
# One image for every Fleetsim process of docker-compose.yml: the set-up one-shots, the bridge, the
# simulator, the streaming job's driver and the dashboard. Each service picks its sub-command
# (`fleetsim <command>`); configuration arrives as FLEETSIM_<SECTION>__<KEY> environment variables.
# No secret is baked in: passwords come from .env at `docker compose up` time.

# ---------------------------------------------------------------------------------------------
# Stage 1: Spark's Kafka connector (matching pyspark 4.1.1), resolved from the same pom.xml the
# local stack uses. Nothing is downloaded when a container runs.
FROM maven:3.9.11-eclipse-temurin-17 AS jvm
WORKDIR /build
COPY fleetsim/jvm/pom.xml pom.xml
# The same settings as `make setup`: every artifact from Maven Central, whatever mirrors say.
COPY scripts/maven-settings.xml settings.xml
RUN mvn -B -q -s settings.xml -f pom.xml -P spark-kafka dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory=/jvm/spark-kafka \
 && ls /jvm/spark-kafka/spark-sql-kafka-0-10_2.13-*.jar

# ---------------------------------------------------------------------------------------------
# Stage 1b: Fleetsim's Spark extension (fleetsim/jvm/src: the windowed flow's deduplication),
# compiled by the same script as `make setup`, against Spark's API jars of the pinned version.
FROM maven:3.9.11-eclipse-temurin-17 AS ext
WORKDIR /build
COPY fleetsim/jvm/pom.xml pom.xml
COPY scripts/maven-settings.xml settings.xml
RUN mvn -B -q -s settings.xml -f pom.xml -P spark-api dependency:copy-dependencies \
      -DexcludeTransitive=true -DoutputDirectory=/build/spark-api
COPY fleetsim/jvm/src fleetsim/jvm/src
COPY scripts/build-spark-ext.sh scripts/build-spark-ext.sh
RUN bash scripts/build-spark-ext.sh /build/spark-api /jvm/spark-ext

# ---------------------------------------------------------------------------------------------
# Stage 2: Python 3.11 + a Java 17 runtime (pyspark's driver JVM) + the project.
# bookworm, not trixie: Debian 13 has no openjdk-17 package.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The man1 directory: openjdk's postinst links man pages there and fails on slim images without it.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/*

# uid/gid 185 = the `spark` user of the apache/spark images: the streaming driver (here) and the
# executors (in spark-worker) write the same checkpoint volume. /app (the code) stays read-only to it;
# its writable home takes tool caches (Streamlit, matplotlib).
RUN groupadd --system --gid 185 fleetsim \
 && useradd --system --uid 185 --gid fleetsim --create-home --home-dir /home/fleetsim \
      --shell /usr/sbin/nologin fleetsim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY fleetsim ./fleetsim
COPY edge ./edge
COPY bridge ./bridge
COPY cloud ./cloud
RUN pip install --no-compile . \
 && fleetsim --help >/dev/null

COPY --from=jvm /jvm /opt/fleetsim/jvm
COPY --from=ext /jvm/spark-ext /opt/fleetsim/jvm/spark-ext
COPY fleetsim.toml devices.csv ./
COPY docker/entrypoint.sh /usr/local/bin/fleetsim-entrypoint
COPY docker/healthcheck.py /usr/local/bin/fleetsim-healthcheck

# /data/checkpoints carries a file so that an empty named volume mounted there is first populated
# (and owned by uid 185) from this image; see the depends_on of spark-worker in docker-compose.yml.
RUN chmod 0755 /usr/local/bin/fleetsim-entrypoint /usr/local/bin/fleetsim-healthcheck \
 && mkdir -p /data/run /data/checkpoints /fleetsim/mosquitto \
 && touch /data/checkpoints/.fleetsim \
 && chown -R fleetsim:fleetsim /data /fleetsim

# Paths inside the image (not secrets). Hosts, ports and passwords are set per service.
ENV FLEETSIM_STACK__RUN_DIR=/data/run \
    FLEETSIM_STACK__JVM_DIR=/opt/fleetsim/jvm \
    FLEETSIM_SPARK__CHECKPOINT_DIR=/data/checkpoints \
    FLEETSIM_SIMULATION__DEVICES_FILE=/app/devices.csv

USER fleetsim
# tini: PID 1 that forwards SIGTERM, so every component shuts down gracefully on `docker compose stop`.
ENTRYPOINT ["tini", "--", "fleetsim-entrypoint"]
CMD ["--help"]
