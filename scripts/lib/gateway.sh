# shellcheck shell=bash
# What scripts/load-test and scripts/soak share: the tools, a scratch
# directory with a cleanup on exit, free loopback ports, an nginx upstream,
# a users file, stepgate instances, signing in with password + TOTP
# enrolment through the real pages, and reading wrk's output.
#
# Sourced, not run, after `set -euo pipefail` and from the repository's
# root. Messages start with the sourcing script's name. A script may define
# cleanup_hook, which runs on exit after every process is stopped and before
# the scratch directory goes.

prog=${0##*/}
BODY="hello from the upstream"
pids=()
tmp=""
# A command the servers started below run under (`taskset -c 1` pins
# them), nginx's worker_processes, and stepgate's `server.work_stealing`.
RUN_ON=()
NGINX_WORKERS=auto
WORK_STEALING=false

# --- tools and build ----------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# Installs nginx, wrk, oathtool, curl and the build's needs when missing;
# sets NGINX.
install_tools() {
  local missing=() sudo=""
  have nginx || missing+=(nginx-light)
  have wrk || missing+=(wrk)
  have oathtool || missing+=(oathtool)
  have curl || missing+=(curl)
  have cmake || missing+=(cmake)
  have cc || missing+=(gcc)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# Builds the release binary and the bare pingora proxy beside it
# (examples/bare_pingora.rs); sets STEPGATE and BARE_PINGORA.
build_stepgate() {
  echo "building stepgate (release)..." >&2
  cargo build --release --quiet --bin stepgate --example bare_pingora
  STEPGATE=$PWD/target/release/stepgate
  BARE_PINGORA=$PWD/target/release/examples/bare_pingora
}

# --- scratch space and cleanup ----------------------------------------------
# Every process started in the background goes into pids: on exit (also on
# Ctrl-C) each gets SIGTERM, then SIGKILL after 5 s.
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if declare -F cleanup_hook >/dev/null; then cleanup_hook; fi
  [ -z "$tmp" ] || rm -rf "$tmp"
}

# Stops the processes started since pids had $1 entries, and forgets them.
stop_since() { # index into pids
  local pid started=("${pids[@]:$1}")
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  pids=("${pids[@]:0:$1}")
}

make_scratch() { # mktemp template name, such as stepgate-load
  tmp=$(mktemp -d -t "$1.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

fail() {
  echo "$prog: $*" >&2
  for log in "$tmp"/*.log; do [ -s "$log" ] && { echo "--- $(basename "$log")" >&2; tail -n 20 "$log" >&2; }; done
  exit 1
}

# Picks a loopback port nobody answers on (and not already picked), below
# the ephemeral range (32768 and up by default), where an outgoing
# connection of any process on the machine can take it first.
picked=" "
free_port() { # variable name
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    [[ $picked == *" $port "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    picked+="$port "
    printf -v "$1" '%s' "$port"
    return
  done
}

# Waits until a URL answers at all (any HTTP status).
wait_for() {
  for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  fail "nothing answers at $1"
}

# --- nginx ----------------------------------------------------------------------
start_nginx() { # name, then the http{} block
  local dir="$tmp/$1" nginx_e=()
  # nginx [-e] only exists from 1.19.5; without it the packaged log path is tried first.
  "$NGINX" -h 2>&1 | grep -q -- ' -e filename' && nginx_e=(-e "$tmp/nginx-startup.log")
  mkdir -p "$dir/temp"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
pid $dir/nginx.pid;
error_log $tmp/$1.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/temp/body;
  proxy_temp_path $dir/temp/proxy;
  fastcgi_temp_path $dir/temp/fastcgi;
  uwsgi_temp_path $dir/temp/uwsgi;
  scgi_temp_path $dir/temp/scgi;
  keepalive_requests 1000000;
  $2
}
EOF
  "${RUN_ON[@]}" "$NGINX" "${nginx_e[@]}" -p "$dir" -c "$dir/nginx.conf" >>"$tmp/$1.log" 2>&1 &
  pids+=($!)
}

# The app: $BODY on every path, and the assertion it got on /whoami.
start_upstream() { # port
  start_nginx upstream "
  server {
    listen 127.0.0.1:$1;
    default_type text/plain;
    location / { return 200 \"$BODY\n\"; }
    location = /whoami { return 200 \"assertion: \$http_x_stepgate_assertion\n\"; }
  }"
}

# --- stepgate -------------------------------------------------------------
# One user and one master key for every instance; sets USERNAME, PASSWORD
# and ENCRYPTION_KEY.
write_users() {
  USERNAME=load
  PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '+/=')
  cat >"$tmp/users.toml" <<EOF
[[users]]
username = "$USERNAME"
display_name = "Load Test"
email = "load@example.com"
password = "$(printf '%s' "$PASSWORD" | "$STEPGATE" hash-password)"
EOF
  ENCRYPTION_KEY=$("$STEPGATE" generate-key)
}

# Further environment for the instances, such as the URLs a [store] or
# [cache] section names (url_env).
STEPGATE_ENV=()

# An instance in front of the upstream at $UPSTREAM_PORT, one app whose
# whole site is `two_factor` (inline, and as the authorizer of an nginx in
# front) but for /open/ (`bypass`), logging at warn to $tmp/NAME.log.
# With AUTHZ_PORT set, the gateway also has the authorizer's own listener there.
start_stepgate() { # name, port, worker threads, then extra configuration (the [store] and [cache] sections)
  local name=$1 port=$2 threads=$3 extra=${4:-} authz_listen=
  [ -z "${AUTHZ_PORT:-}" ] || authz_listen="authz_listen = \"127.0.0.1:$AUTHZ_PORT\""
  cat >"$tmp/$name.toml" <<EOF
users_file = "users.toml"

[server]
listen = "127.0.0.1:$port"
$authz_listen
data_dir = "data-$name"
threads = $threads
work_stealing = $WORK_STEALING
# nginx in front asks it too (forward-auth), from this address.
trusted_proxies = ["127.0.0.1/32"]

[logging]
level = "warn"
$extra
[[apps]]
id = "load"
hosts = ["127.0.0.1"]
mode = "both"
upstreams = ["http://127.0.0.1:$UPSTREAM_PORT"]

[[apps.rules]]
path = "/open/"
policy = "bypass"

[[apps.rules]]
path = "/"
policy = "two_factor"
EOF
  # RUST_LOG would override the configured level.
  "${RUN_ON[@]}" env -u RUST_LOG STEPGATE_ENCRYPTION_KEY="$ENCRYPTION_KEY" "${STEPGATE_ENV[@]}" \
    "$STEPGATE" serve --config "$tmp/$name.toml" >>"$tmp/$name.log" 2>&1 &
  pids+=($!)
}

# --- sign in: password, then TOTP enrolment ---------------------------------------
csrf_of() { sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n 1; }

# Signs $USERNAME in at a gateway and sets the variable named by $2 to a
# Cookie header with the session (a variable, not $(...), so fail exits).
sign_in() { # gateway base URL, variable name
  local gate=$1 jar page csrf status secret code session
  jar=$(mktemp -p "$tmp" cookies.XXXXXX)
  get() { curl -sS --max-time 10 -b "$jar" -c "$jar" "$@"; }

  page=$(get "$gate/.stepgate/signin?rd=/")
  csrf=$(csrf_of <<<"$page")
  [ -n "$csrf" ] || fail "$gate: no csrf token on the sign-in page"
  status=$(get -o /dev/null -w '%{http_code}' --data-urlencode "username=$USERNAME" \
    --data-urlencode "password=$PASSWORD" --data-urlencode "csrf=$csrf" --data-urlencode "rd=/" "$gate/.stepgate/signin")
  [ "$status" = 303 ] || fail "$gate: sign-in answered $status, expected 303"

  page=$(get "$gate/.stepgate/second-factor?rd=/")
  secret=$(sed -n 's/.*<code class="secret" id="secret">\([^<]*\)<\/code>.*/\1/p' <<<"$page" | tr -d ' ')
  csrf=$(csrf_of <<<"$page")
  if [ -z "$secret" ] || [ -z "$csrf" ]; then fail "$gate: no TOTP enrolment page after the password"; fi
  code=$(oathtool --totp -b "$secret")
  status=$(get -o /dev/null -w '%{http_code}' --data-urlencode "csrf=$csrf" --data-urlencode "code=$code" \
    --data-urlencode "rd=/" "$gate/.stepgate/second-factor/totp/enroll")
  [ "$status" = 303 ] || fail "$gate: TOTP enrolment answered $status, expected 303"
  session=$(awk '$6 == "stepgate_session" { print $7 }' "$jar" | tail -n 1)
  [ -n "$session" ] || fail "$gate: no stepgate_session cookie after the second factor"
  printf -v "$2" '%s' "Cookie: stepgate_session=$session"
}

# --- check a path before loading it -----------------------------------------------
expect_body() { # url, then curl options
  local url=$1 out
  shift
  out=$(curl -sS --max-time 5 -w '%{http_code}' "$@" "$url") || fail "$url: request failed"
  [ "$out" = "$BODY"$'\n'"200" ] || fail "$url answered: $out"
}
expect_signed_in() { # gateway base URL, Cookie header
  local status
  expect_body "$1/" -H "$2"
  status=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "$1/")
  [ "$status" = 401 ] || fail "$1 without a session answered $status, expected 401"
  curl -s --max-time 5 -H "$2" "$1/whoami" | grep -q '^assertion: ey' || fail "$1: the upstream got no assertion"
}

# --- wrk's output, in $tmp/NAME.wrk ---------------------------------------------------
# wrk prints latencies as 812.00us, 1.25ms, 1.02s or 1.50m: give milliseconds.
ms() { awk -v v="$1" 'BEGIN { n = v + 0
  if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; else if (v ~ /m$/) n *= 60000
  printf "%.2f", n }'; }
field() { ms "$(awk -v key="$2" '$1 == key { print $2; exit }' "$tmp/$1.wrk")"; } # name, 50% or 99%
rps() { awk '/^Requests\/sec:/ { print $2 }' "$tmp/$1.wrk"; }
bad() { # non-2xx/3xx responses plus socket errors
  awk '/Non-2xx or 3xx responses:/ { n += $NF }
       /Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
       END { print n + 0 }' "$tmp/$1.wrk"
}

# --- CPU time and memory ----------------------------------------------------------
# The processes given and all their descendants (nginx's workers), from /proc.
process_tree() { # pid...
  local tree=" $* " grew=1 stat pid ppid
  while [ "$grew" = 1 ]; do
    grew=0
    for stat in /proc/[0-9]*/stat; do
      read -r pid _ _ ppid _ 2>/dev/null <"$stat" || continue
      if [[ $tree == *" $ppid "* && $tree != *" $pid "* ]]; then
        tree+="$pid "
        grew=1
      fi
    done
  done
  echo "$tree"
}
# User plus system CPU seconds spent so far by the process trees (a
# process's threads included).
cpu_seconds() { # pid...
  local pid
  for pid in $(process_tree "$@"); do
    # Fields 14 and 15 (utime, stime), counted after the ")" that ends the name.
    sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }'
  done | awk -v hz="$(getconf CLK_TCK)" '{ t += $1 } END { printf "%.3f", t / hz }'
}
# Resident memory of the process trees now, in MiB.
rss_mib() { # pid...
  local pid
  for pid in $(process_tree "$@"); do
    awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null
  done | awk '{ kib += $1 } END { printf "%.1f", kib / 1024 }'
}
requests() { awk '/requests in/ { print $1; exit }' "$tmp/$1.wrk"; } # name: how many wrk completed
