#!/bin/sh
# Health check of the apache/kafka container: an authenticated API-versions request over the
# SASL/PLAIN client listener as the admin identity (a TCP probe would pass before SASL works).
# The password comes from the container's environment and goes to a private temp file, never argv.
set -eu
conf="${TMPDIR:-/tmp}/fleetsim-healthcheck.properties"
umask 077
cat > "$conf" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="${FLEETSIM_KAFKA__ADMIN_USER:-fleetsim-admin}" password="${FLEETSIM_KAFKA__ADMIN_PASSWORD}";
PROPS
exec /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092 \
    --command-config "$conf" >/dev/null
