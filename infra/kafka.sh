#!/usr/bin/env bash
# Fetch, start and stop the single-node Apache Kafka broker (KRaft mode, one
# process as broker and controller) that shopsynth uses for development and tests.
#
# Usage: infra/kafka.sh COMMAND
#
#   fetch        resolve the broker jars with Maven into $SHOPSYNTH_KAFKA_HOME/lib
#   start        fetch if needed, format the storage once, start the broker in
#                the background and wait until it serves metadata. Does
#                nothing if this port's broker already runs
#   stop         stop the broker (SIGTERM, then SIGKILL after the stop timeout)
#   status       exit 0 if the broker runs, 1 if it does not
#   reset        stop the broker and delete its data directory
#   logs [N]     print the last N lines of the broker log (default 100)
#   env          print the paths and the bootstrap address as NAME=value lines
#
# Environment:
#   SHOPSYNTH_KAFKA_HOME             jars and broker state (default <repo>/var/kafka)
#   SHOPSYNTH_KAFKA_PORT             PLAINTEXT port on 127.0.0.1 (default 9092);
#                                    the controller listens on the next port
#   SHOPSYNTH_KAFKA_START_TIMEOUT_S  maximum wait for the broker to serve metadata (default 60)
#   SHOPSYNTH_KAFKA_STOP_TIMEOUT_S   wait after SIGTERM before SIGKILL (default 30)
#   SHOPSYNTH_KAFKA_HEAP_OPTS        JVM heap options (default "-Xms256m -Xmx768m")
#
# Each port has its own state folder $SHOPSYNTH_KAFKA_HOME/broker-<port> with
# server.properties, kafka.pid, server.log and the data/ directory, so brokers
# on different ports can run side by side. Needs bash, Java 17+ and, for
# fetch, Maven 3.8+ with access to Maven Central.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_DIR="$ROOT/infra/kafka"
KAFKA_HOME="${SHOPSYNTH_KAFKA_HOME:-$ROOT/var/kafka}"
case "$KAFKA_HOME" in
    /*) ;;
    *) KAFKA_HOME="$PWD/$KAFKA_HOME" ;;
esac
PORT="${SHOPSYNTH_KAFKA_PORT:-9092}"
START_TIMEOUT_S="${SHOPSYNTH_KAFKA_START_TIMEOUT_S:-60}"
STOP_TIMEOUT_S="${SHOPSYNTH_KAFKA_STOP_TIMEOUT_S:-30}"
HEAP_OPTS="${SHOPSYNTH_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"

LIB_DIR="$KAFKA_HOME/lib"
STAMP_FILE="$LIB_DIR/.pom.sha256"
INSTANCE_DIR="$KAFKA_HOME/broker-$PORT"
PID_FILE="$INSTANCE_DIR/kafka.pid"
LOG_FILE="$INSTANCE_DIR/server.log"
DATA_DIR="$INSTANCE_DIR/data"
PROPS_FILE="$INSTANCE_DIR/server.properties"
LOG4J_CONFIG="$CONF_DIR/log4j2.xml"

# Metadata request v4 (API key 3) for no topics, so the response lists only
# the brokers. Fields: size 30, api_key, api_version, correlation_id 1,
# client_id "shopsynth-probe" (15 bytes), topics (empty array),
# allow_auto_topic_creation false.
METADATA_REQUEST='\x00\x00\x00\x1e\x00\x03\x00\x04\x00\x00\x00\x01\x00\x0fshopsynth-probe\x00\x00\x00\x00\x00'

log() { echo "kafka.sh: $*"; }
die() {
    echo "kafka.sh: error: $*" >&2
    exit 1
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

check_settings() {
    [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65534 ] ||
        die "invalid SHOPSYNTH_KAFKA_PORT '$PORT': expected a port from 1 to 65534 (the controller uses port + 1)"
    [[ "$START_TIMEOUT_S" =~ ^[0-9]+$ ]] ||
        die "invalid SHOPSYNTH_KAFKA_START_TIMEOUT_S '$START_TIMEOUT_S': expected whole seconds"
    [[ "$STOP_TIMEOUT_S" =~ ^[0-9]+$ ]] ||
        die "invalid SHOPSYNTH_KAFKA_STOP_TIMEOUT_S '$STOP_TIMEOUT_S': expected whole seconds"
    CONTROLLER_PORT=$((PORT + 1))
}

# Take an exclusive lock on file $2 through file descriptor $1. The lock ends
# when the script exits. Without flock (macOS) the commands run unlocked.
take_lock() {
    local fd="$1" lock_file="$2"
    command -v flock >/dev/null 2>&1 || return 0
    mkdir -p "$(dirname "$lock_file")"
    eval "exec $fd>\"\$lock_file\""
    flock -w 300 "$fd" || die "timed out after 300 s waiting for the lock $lock_file"
}

pom_digest() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$CONF_DIR/pom.xml" | cut -d' ' -f1
    else
        shasum -a 256 "$CONF_DIR/pom.xml" | cut -d' ' -f1
    fi
}

is_fetched() {
    [ -f "$STAMP_FILE" ] || return 1
    [ "$(cat "$STAMP_FILE")" = "$(pom_digest)" ] || return 1
    compgen -G "$LIB_DIR/kafka_2.13-*.jar" >/dev/null
}

cmd_fetch() {
    mkdir -p "$KAFKA_HOME"
    take_lock 8 "$KAFKA_HOME/.fetch.lock"
    if is_fetched; then
        log "broker jars are up to date in $LIB_DIR"
        return 0
    fi
    command -v java >/dev/null 2>&1 || die "java not found: install a Java 17 or newer runtime"
    command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven 3.8 or newer"

    # Resolve into a fresh folder and swap it in, so an interrupted or failed
    # fetch never leaves a half-filled lib folder behind.
    local staging fetch_log="$KAFKA_HOME/fetch.log"
    staging="$(mktemp -d "$KAFKA_HOME/lib.staging.XXXXXX")"
    chmod 755 "$staging"
    trap 'rm -rf "$staging"' EXIT
    log "resolving the broker jars from $CONF_DIR/pom.xml with Maven"
    if ! mvn -q -B -f "$CONF_DIR/pom.xml" dependency:copy-dependencies \
        -Dkafka.lib.dir="$staging" >"$fetch_log" 2>&1; then
        tail -n 30 "$fetch_log" >&2
        die "Maven failed to resolve the broker jars (full output in $fetch_log). Maven Central must be reachable, or a mirror set in ~/.m2/settings.xml"
    fi
    compgen -G "$staging/kafka_2.13-*.jar" >/dev/null ||
        die "Maven finished but copied no kafka_2.13 jar (output in $fetch_log)"
    pom_digest >"$staging/.pom.sha256"
    rm -rf "$LIB_DIR"
    mv "$staging" "$LIB_DIR"
    trap - EXIT
    log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l | tr -d ' ') jars into $LIB_DIR"
}

pid_alive() {
    local state
    state="$(ps -p "$1" -o stat= 2>/dev/null)" || return 1
    [[ "$state" != Z* ]]
}

# Print the broker pid if this port's broker runs. The command line must
# still name this instance's properties file, which guards against a pid
# that the system has since given to another process.
running_pid() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    ps -ww -p "$pid" -o args= 2>/dev/null | grep -qF -- "$PROPS_FILE" || return 1
    echo "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Send a Metadata request and succeed if the reply has correlation id 1 and
# lists at least one broker. A KRaft broker appears in metadata only once it
# is registered and unfenced, so this means it can serve clients.
broker_serves_metadata() {
    local reply
    reply="$({
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" &&
            printf "$METADATA_REQUEST" >&3 &&
            timeout 5 head -c 16 <&3 | od -An -v -tu1
    } 2>/dev/null)" || return 1
    local -a bytes
    read -r -a bytes <<<"$reply"
    [ "${#bytes[@]}" -eq 16 ] || return 1
    # Reply v4: size, correlation_id, throttle_time_ms, broker count (int32 each).
    [ "${bytes[4]}${bytes[5]}${bytes[6]}${bytes[7]}" = "0001" ] || return 1
    local broker_count=$(((bytes[12] << 24) | (bytes[13] << 16) | (bytes[14] << 8) | bytes[15]))
    [ "$broker_count" -ge 1 ]
}

render_properties() {
    local data_dir_escaped
    data_dir_escaped="$(printf '%s' "$DATA_DIR" | sed -e 's/[\\|&]/\\&/g')"
    sed -e "s|@PORT@|$PORT|g" \
        -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$data_dir_escaped|g" \
        "$CONF_DIR/server.properties" >"$PROPS_FILE.tmp"
    local unreplaced
    unreplaced="$(grep -v '^#' "$PROPS_FILE.tmp" | grep -m1 '@[A-Z_]*@' || true)"
    if [ -n "$unreplaced" ]; then
        rm -f "$PROPS_FILE.tmp"
        die "unknown placeholder in $CONF_DIR/server.properties: $unreplaced"
    fi
    mv "$PROPS_FILE.tmp" "$PROPS_FILE"
}

# A Kafka cluster id is 16 random bytes in URL-safe base64 without padding.
# One that starts with '-' would read as an option, so draw again.
new_cluster_id() {
    local cluster_id
    while :; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$cluster_id" == -* ]] || break
    done
    echo "$cluster_id"
}

format_storage_once() {
    [ -f "$DATA_DIR/meta.properties" ] && return 0
    local cluster_id
    cluster_id="$(new_cluster_id)"
    log "formatting $DATA_DIR (cluster id $cluster_id)"
    mkdir -p "$DATA_DIR"
    if ! java -Xmx256m -Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$LIB_DIR/*" \
        kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$PROPS_FILE" \
        >>"$LOG_FILE" 2>&1; then
        tail -n 30 "$LOG_FILE" >&2
        die "formatting the storage in $DATA_DIR failed (log: $LOG_FILE)"
    fi
}

launch_broker() {
    local -a java_opts
    read -r -a java_opts <<<"$HEAP_OPTS"
    java_opts+=(
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$LOG4J_CONFIG"
    )
    rm -f "$PID_FILE"
    # The child writes its own pid, then execs java, so the pid file is right
    # whether or not setsid forks. setsid detaches the broker from the
    # caller's session and terminal signals. File descriptors 8 and 9 hold
    # this script's locks and are closed for the broker.
    local -a detach=(nohup)
    command -v setsid >/dev/null 2>&1 && detach=(setsid)
    "${detach[@]}" bash -c 'echo $$ >"$0" && exec "$@"' "$PID_FILE" \
        java "${java_opts[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$PROPS_FILE" \
        </dev/null >>"$LOG_FILE" 2>&1 8>&- 9>&- &

    local waited_s=0
    until [ -s "$PID_FILE" ]; do
        sleep 0.1
        waited_s=$((waited_s + 1))
        [ "$waited_s" -lt 100 ] || die "the broker process did not start (log: $LOG_FILE)"
    done
}

wait_until_ready() {
    local started_at=$SECONDS deadline=$((SECONDS + START_TIMEOUT_S))
    until broker_serves_metadata; do
        if ! running_pid >/dev/null; then
            rm -f "$PID_FILE"
            tail -n 40 "$LOG_FILE" >&2
            die "the broker exited during startup (full log: $LOG_FILE)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 40 "$LOG_FILE" >&2
            log "stopping the broker that did not become ready" >&2
            stop_broker >&2
            die "timed out after ${START_TIMEOUT_S} s waiting for the broker on 127.0.0.1:$PORT to serve metadata (full log: $LOG_FILE); raise SHOPSYNTH_KAFKA_START_TIMEOUT_S on a slow machine"
        fi
        sleep 0.5
    done
    log "broker ready on 127.0.0.1:$PORT after $((SECONDS - started_at)) s (pid $(cat "$PID_FILE"))"
}

cmd_start() {
    cmd_fetch
    take_lock 9 "$INSTANCE_DIR/.lock"
    local pid
    if pid="$(running_pid)"; then
        log "broker already running on 127.0.0.1:$PORT (pid $pid)"
        wait_until_ready
        return 0
    fi
    command -v java >/dev/null 2>&1 || die "java not found: install a Java 17 or newer runtime"
    local port
    for port in "$PORT" "$CONTROLLER_PORT"; do
        if port_open "$port"; then
            die "port $port on 127.0.0.1 is already in use by another process; stop it or pick another port with SHOPSYNTH_KAFKA_PORT (the broker needs that port and the next one)"
        fi
    done

    render_properties
    if [ -f "$LOG_FILE" ]; then
        mv "$LOG_FILE" "$LOG_FILE.1"
    fi
    format_storage_once
    log "starting the broker on 127.0.0.1:$PORT (controller on port $CONTROLLER_PORT, log $LOG_FILE)"
    launch_broker
    wait_until_ready
}

# Stop this port's broker. The caller holds the instance lock.
stop_broker() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "broker on port $PORT is not running"
        return 0
    fi
    log "stopping the broker on port $PORT (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.2
    done
    if pid_alive "$pid"; then
        log "broker did not stop within ${STOP_TIMEOUT_S} s of SIGTERM, sending SIGKILL (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
        while pid_alive "$pid"; do
            sleep 0.1
        done
    fi
    rm -f "$PID_FILE"
    log "broker stopped (pid $pid)"
}

cmd_stop() {
    take_lock 9 "$INSTANCE_DIR/.lock"
    stop_broker
}

cmd_status() {
    local pid
    if ! pid="$(running_pid)"; then
        echo "not running (port $PORT)"
        return 1
    fi
    if broker_serves_metadata; then
        echo "running (pid $pid), bootstrap 127.0.0.1:$PORT"
    else
        echo "running (pid $pid) on 127.0.0.1:$PORT but not serving metadata yet"
    fi
}

cmd_reset() {
    take_lock 9 "$INSTANCE_DIR/.lock"
    stop_broker
    rm -rf "$DATA_DIR"
    log "deleted $DATA_DIR"
}

cmd_logs() {
    local lines="${1:-100}"
    [[ "$lines" =~ ^[0-9]+$ ]] || die "invalid line count '$lines': expected a whole number"
    [ -f "$LOG_FILE" ] || die "no broker log at $LOG_FILE: start the broker first"
    tail -n "$lines" "$LOG_FILE"
}

cmd_env() {
    echo "SHOPSYNTH_KAFKA_HOME=$KAFKA_HOME"
    echo "KAFKA_INSTANCE_DIR=$INSTANCE_DIR"
    echo "KAFKA_PID_FILE=$PID_FILE"
    echo "KAFKA_LOG_FILE=$LOG_FILE"
    echo "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$PORT"
}

main() {
    local command="${1:-}"
    [ "$#" -gt 0 ] && shift
    check_settings
    case "$command" in
        fetch) cmd_fetch ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        logs) cmd_logs "$@" ;;
        env) cmd_env ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            [ -z "$command" ] || echo "kafka.sh: error: unknown command '$command'" >&2
            exit 2
            ;;
    esac
}

main "$@"
