#!/usr/bin/env bash
# kafka.sh: a real Apache Kafka (KRaft) on loopback for Spillway's tests.
#
#   kafka.sh fetch                 resolve Kafka's jars into the cache (Maven)
#   kafka.sh start single|cluster  format and start 1 or 3 combined nodes,
#                                  wait until they answer, print the bootstrap
#   kafka.sh stop [--clean]        SIGTERM every node, kill -9 after a timeout;
#                                  --clean also removes the run folder
#   kafka.sh kill9 <node|all>      kill -9 a node's process (fault tests)
#   kafka.sh restart <node|all>    stop a node if it runs (SIGTERM), start it
#                                  again from its log folders, wait for it
#   kafka.sh status                one line per node: id, pid or "down", address
#   kafka.sh env                   print "export SPILLWAY_TEST_BROKERS=..."
#   kafka.sh bootstrap             print the bootstrap addresses (host:port,...)
#
# Nodes are numbered 1..N and node n has node.id n, so a test can map a
# partition leader (a broker id) to the node to kill.
#
# Environment (defaults in brackets):
#   SPILLWAY_KAFKA_VERSION    Kafka version on Maven Central [4.4.0]
#   SPILLWAY_KAFKA_CACHE      jar folder [${XDG_CACHE_HOME:-$HOME/.cache}/spillway/kafka-VERSION]
#   SPILLWAY_KAFKA_RUN        run folder: configs, data, logs, pids [/tmp/spillway-kafka]
#   SPILLWAY_KAFKA_PORT_BASE  node n listens on BASE+10(n-1)+2 (clients) and
#                             +3 (controller) [29090: 29092/29093, 29102/29103, ...];
#                             keep it below the ephemeral range (Linux: 32768+),
#                             where an outgoing connection can hold the port
#   SPILLWAY_KAFKA_HEAP       -Xmx of each node [512m]
#   SPILLWAY_KAFKA_PROPERTIES extra server properties, one key=value per line,
#                             appended to every node's (a later key wins), e.g.
#                             broker.session.timeout.ms=3000 for faster failover []
#   SPILLWAY_KAFKA_WAIT       seconds to wait for the cluster to answer [180]
#   SPILLWAY_KAFKA_STOP_WAIT  seconds between SIGTERM and kill -9 of restart [30]
#   SPILLWAY_KAFKA_STOP_ALL_WAIT  the same for stop [10]: when every combined
#                             node stops at once, the last ones lose the
#                             controller quorum and their controlled shutdown
#                             never completes, so stop does not wait long
#
# Two independent clusters can run side by side with different
# SPILLWAY_KAFKA_RUN and SPILLWAY_KAFKA_PORT_BASE.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=${SPILLWAY_KAFKA_VERSION:-4.4.0}
cache=${SPILLWAY_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spillway/kafka-$version}
run=${SPILLWAY_KAFKA_RUN:-/tmp/spillway-kafka}
base=${SPILLWAY_KAFKA_PORT_BASE:-29090}
heap=${SPILLWAY_KAFKA_HEAP:-512m}
wait_s=${SPILLWAY_KAFKA_WAIT:-180}
stop_wait=${SPILLWAY_KAFKA_STOP_WAIT:-30}
stop_all_wait=${SPILLWAY_KAFKA_STOP_ALL_WAIT:-10}

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

broker_port() { echo $((base + 10 * ($1 - 1) + 2)); }
controller_port() { echo $((base + 10 * ($1 - 1) + 3)); }

# A random Kafka Uuid: 16 bytes, URL-safe base64 without padding. Kafka
# avoids ids that begin with '-' (they read as a command-line flag).
uuid() {
  local u
  while :; do
    u=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    [[ $u != -* ]] && { echo "$u"; return; }
  done
}

cmd_fetch() {
  if [[ -f $cache/.complete ]]; then
    log "Kafka $version cached in $cache"
    return
  fi
  command -v mvn >/dev/null || die "fetch: Maven (mvn) is not installed; install it (apt-get install -y maven) to download Apache Kafka $version"
  command -v java >/dev/null || die "fetch: no java on PATH; Kafka $version needs Java 17 or newer"
  log "fetching org.apache.kafka:kafka_2.13:$version and its runtime dependencies from Maven into $cache"
  local tmp=$cache.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B -f "$here/pom.xml" -Dkafka.version="$version" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "fetch: FAILED to download Apache Kafka $version from Maven Central (see the Maven output above); the real-Kafka tests cannot run"
  fi
  rm -f "$tmp.log"
  ls "$tmp"/kafka_2.13-"$version".jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "fetch: kafka_2.13-$version.jar missing after the download"; }
  touch "$tmp/.complete"
  rm -rf "$cache"
  mkdir -p "$(dirname "$cache")"
  mv "$tmp" "$cache"
  log "Kafka $version: $(find "$cache" -name '*.jar' | wc -l) jars in $cache"
}

nodes() { cat "$run/nodes" 2>/dev/null || echo 0; }

# alive: the process exists and is not a zombie waiting for its reaper.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# check_run_dir refuses to empty a folder kafka.sh did not create.
check_run_dir() {
  if [[ -d $run && ! -f $run/mode && -n $(ls -A "$run") ]]; then
    die "refusing to empty $run: it is not a kafka.sh run folder (set SPILLWAY_KAFKA_RUN)"
  fi
}

pid_of() {
  local f=$run/node$1/pid p
  [[ -f $f ]] || return 1
  p=$(cat "$f")
  [[ -n $p ]] && alive "$p" && grep -qa kafka.Kafka "/proc/$p/cmdline" 2>/dev/null || return 1
  echo "$p"
}

any_alive() {
  local n
  for ((n = 1; n <= $(nodes); n++)); do
    pid_of "$n" >/dev/null && return 0
  done
  return 1
}

alive_count() {
  local n c=0
  for ((n = 1; n <= $(nodes); n++)); do
    pid_of "$n" >/dev/null && c=$((c + 1))
  done
  echo "$c"
}

bootstrap() {
  local n out=
  for ((n = 1; n <= $(nodes); n++)); do
    out+="${out:+,}127.0.0.1:$(broker_port "$n")"
  done
  echo "$out"
}

java_opts() {
  local dir=$1
  echo "-Xmx$heap -Xms128m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true" \
    "-Dlog4j2.configurationFile=$dir/log4j2.properties -Dkafka.logs.dir=$dir/logs"
}

write_node_config() {
  local n=$1 count=$2 dir=$run/node$1 rf min voters='' i
  for ((i = 1; i <= count; i++)); do
    voters+="${voters:+,}127.0.0.1:$(controller_port "$i")"
  done
  if ((count == 1)); then rf=1 min=1; else rf=3 min=2; fi
  mkdir -p "$dir/data" "$dir/logs"
  cat >"$dir/server.properties" <<EOF
# Written by kafka.sh for tests: node $n of $count, combined broker+controller.
process.roles=broker,controller
node.id=$n
controller.quorum.bootstrap.servers=$voters
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
# kfake's defaults in the suite: 4 partitions, topics created on first use.
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=$rf
min.insync.replicas=$min
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min
# Tests start groups often: no initial rebalance delay.
group.initial.rebalance.delay.ms=0
# A small box (2 cores) shared by several nodes and the tests.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
EOF
  if [[ -n ${SPILLWAY_KAFKA_PROPERTIES:-} ]]; then
    printf '# SPILLWAY_KAFKA_PROPERTIES\n%s\n' "$SPILLWAY_KAFKA_PROPERTIES" >>"$dir/server.properties"
  fi
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
EOF
}

format_node() {
  local n=$1 cluster_id=$2 dir=$run/node$1
  shift 2
  # shellcheck disable=SC2046
  java $(java_opts "$dir") -cp "$cache/*" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$dir/server.properties" "$@" >"$dir/logs/format.log" 2>&1 ||
    { cat "$dir/logs/format.log" >&2; die "format of node $n failed"; }
}

launch_node() {
  local n=$1 dir=$run/node$1 p
  if p=$(pid_of "$n"); then
    log "node $n already runs (pid $p)"
    return
  fi
  # setsid: the node outlives a Ctrl-C in the terminal that started it;
  # kafka.sh stop (or a trap calling it) ends it.
  # shellcheck disable=SC2046
  setsid java $(java_opts "$dir") -cp "$cache/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >>"$dir/logs/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  log "node $n started (pid $!, 127.0.0.1:$(broker_port "$n"), logs in $dir/logs)"
}

probe() {
  if [[ ! -x $run/bin/kafkaprobe ]]; then
    mkdir -p "$run/bin"
    (cd "$repo" && go build -o "$run/bin/kafkaprobe" ./integration/realkafka/kafkaprobe) ||
      die "cannot build integration/realkafka/kafkaprobe"
  fi
  "$run/bin/kafkaprobe" "$@"
}

# wait_ready waits until every running node is a registered, unfenced broker.
wait_ready() {
  local deadline=$((SECONDS + wait_s)) n want
  while :; do
    want=$(alive_count)
    for ((n = 1; n <= $(nodes); n++)); do
      if [[ -f $run/node$n/pid ]] && [[ ! -f $run/node$n/down ]] && ! pid_of "$n" >/dev/null; then
        tail -n 40 "$run/node$n/logs/server.log" "$run/node$n/logs/stdout.log" >&2 2>/dev/null || true
        die "node $n exited while starting (logs above, all in $run/node$n/logs)"
      fi
    done
    if probe wait -brokers "$(bootstrap)" -want "$want" -timeout 3s >&2 2>"$run/probe.err"; then
      return
    fi
    if ((SECONDS >= deadline)); then
      cat "$run/probe.err" >&2
      die "the cluster did not answer with $want brokers within ${wait_s}s (logs in $run/node*/logs)"
    fi
    sleep 1
  done
}

cmd_start() {
  local mode=${1:-} count n cluster_id ctrl=
  case $mode in
    single) count=1 ;;
    cluster) count=3 ;;
    *) die "usage: kafka.sh start single|cluster" ;;
  esac
  if [[ -d $run ]] && any_alive; then
    die "a cluster already runs from $run ($(cat "$run/mode" 2>/dev/null)); run kafka.sh stop first"
  fi
  check_run_dir
  cmd_fetch
  rm -rf "$run"
  mkdir -p "$run"
  echo "$mode" >"$run/mode"
  echo "$count" >"$run/nodes"
  cluster_id=$(uuid)
  echo "$cluster_id" >"$run/cluster-id"
  for ((n = 1; n <= count; n++)); do
    write_node_config "$n" "$count"
    ctrl+="${ctrl:+,}$n@127.0.0.1:$(controller_port "$n"):$(uuid)"
  done
  log "formatting $count node(s) of cluster $cluster_id in $run"
  local pids=()
  for ((n = 1; n <= count; n++)); do
    if ((count == 1)); then
      format_node "$n" "$cluster_id" --standalone &
    else
      format_node "$n" "$cluster_id" --initial-controllers "$ctrl" &
    fi
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "format failed"; done
  for ((n = 1; n <= count; n++)); do launch_node "$n"; done
  wait_ready
  bootstrap >"$run/bootstrap"
  log "Kafka $version ($mode) answers at $(bootstrap)"
  bootstrap
}

# stop_nodes signal wait n...: sends signal to the nodes and waits for them to
# exit, escalating to kill -9 after wait seconds.
stop_nodes() {
  local sig=$1 wait=$2 n p deadline
  shift 2
  local pids=()
  for n in "$@"; do
    if p=$(pid_of "$n"); then
      kill "-$sig" "$p" 2>/dev/null || true
      pids+=("$p")
      touch "$run/node$n/down"
    fi
  done
  deadline=$((SECONDS + wait))
  for p in "${pids[@]}"; do
    while alive "$p"; do
      if ((SECONDS >= deadline)); then
        log "pid $p still runs ${wait}s after SIG$sig: kill -9"
        kill -9 "$p" 2>/dev/null || true
        while alive "$p"; do sleep 0.05; done
        break
      fi
      sleep 0.2
    done
  done
}

node_list() {
  local what=$1 n
  [[ -f $run/nodes ]] || die "nothing started from $run"
  if [[ $what == all ]]; then
    seq 1 "$(nodes)"
    return
  fi
  if ! [[ $what =~ ^[0-9]+$ ]] || ((what < 1 || what > $(nodes))); then
    die "no node $what (nodes are 1..$(nodes) or all)"
  fi
  echo "$what"
}

cmd_stop() {
  if [[ ! -f $run/nodes ]]; then
    log "nothing started from $run"
  else
    # shellcheck disable=SC2046
    stop_nodes TERM "$stop_all_wait" $(seq 1 "$(nodes)")
    log "stopped the $(cat "$run/mode") Kafka of $run"
  fi
  if [[ ${1:-} == --clean ]]; then
    check_run_dir
    rm -rf "$run"
  fi
}

cmd_kill9() {
  local n p
  for n in $(node_list "${1:?usage: kafka.sh kill9 <node|all>}"); do
    if p=$(pid_of "$n"); then
      kill -9 "$p"
      while alive "$p"; do sleep 0.05; done
      touch "$run/node$n/down"
      log "node $n (pid $p) killed with SIGKILL"
    else
      log "node $n is not running"
    fi
  done
}

cmd_restart() {
  local list n
  list=$(node_list "${1:?usage: kafka.sh restart <node|all>}")
  # shellcheck disable=SC2086
  stop_nodes TERM "$stop_wait" $list
  for n in $list; do
    rm -f "$run/node$n/down"
    launch_node "$n"
  done
  wait_ready
  log "restarted node(s) ${list//$'\n'/ }; $(alive_count) of $(nodes) answer at $(bootstrap)"
}

cmd_status() {
  local n p
  [[ -f $run/nodes ]] || die "nothing started from $run"
  for ((n = 1; n <= $(nodes); n++)); do
    p=$(pid_of "$n") || p=down
    echo "node $n pid $p 127.0.0.1:$(broker_port "$n")"
  done
}

cmd=${1:-}
shift || true
case $cmd in
  fetch) cmd_fetch ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  kill9) cmd_kill9 "$@" ;;
  restart) cmd_restart "$@" ;;
  status) cmd_status ;;
  bootstrap) [[ -f $run/bootstrap ]] || die "nothing started from $run"; cat "$run/bootstrap" ;;
  env) [[ -f $run/bootstrap ]] || die "nothing started from $run"; echo "export SPILLWAY_TEST_BROKERS=$(cat "$run/bootstrap")" ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
