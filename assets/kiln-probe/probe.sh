#!/bin/bash
# kiln probe: runs inside a freshly booted container. Installs one package,
# starts its service, waits for it and probes it. Reports on stdout as
# PROBE:<key>=<value> lines; the caller judges. Settings come from
# /run/kiln-probe/env; probes.sh (unit_state, listening) is sourced.
set -u
# shellcheck source=/dev/null
. /run/kiln-probe/env
# shellcheck source=/dev/null
. /run/kiln-probe/probes.sh
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
say() { printf 'PROBE:%s=%s\n' "$1" "$2"; }
fail() {
  say fail "$1"
  exit 1
}

apt-get update -qq >"$log" 2>&1 || fail "apt-get update: $(tail -n 2 "$log" | tr '\n' ' ')"
if [ -n "${DEB:-}" ]; then
  apt-get install -y -qq --no-install-recommends "/run/kiln-probe/$DEB" >"$log" 2>&1 ||
    fail "install: $(tail -n 3 "$log" | tr '\n' ' ')"
else
  apt-get install -y -qq --no-install-recommends "$PKG" >"$log" 2>&1 ||
    fail "install: $(tail -n 3 "$log" | tr '\n' ' ')"
fi
say version "$(dpkg-query -W -f='${Version}' "$PKG" 2>/dev/null)"

if [ -n "${UNIT:-}" ]; then
  systemctl start "$UNIT" >"$log" 2>&1 || true
  state=$(unit_state "$UNIT")
  say service "$state"
  [ "$state" = active ] || fail "service $UNIT is $state: $(journalctl -u "$UNIT" -n 3 --no-pager -o cat | tr '\n' ' ')"
fi

if [ -n "${PORT:-}" ]; then
  if listening "$PORT"; then say port open; else fail "nothing listens on port $PORT"; fi
fi

if [ -n "${URL:-}" ]; then
  rest=${URL#http://}
  hostport=${rest%%/*}
  path=/${rest#*/}
  [ "$rest" = "$hostport" ] && path=/
  host=${hostport%%:*}
  port=${hostport##*:}
  [ "$port" = "$hostport" ] && port=80
  resp=$(mktemp)
  for _ in $(seq 1 30); do
    if exec 3<>"/dev/tcp/$host/$port"; then
      printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
      timeout 10 cat <&3 >"$resp"
      exec 3>&-
      break
    fi 2>/dev/null
    sleep 1
  done
  status=$(head -n 1 "$resp" | cut -d' ' -f2)
  say http "${status:-none}"
  case ${EXPECT:-200} in
  /*/)
    re=${EXPECT#/}
    re=${re%/}
    sed '1,/^\r\{0,1\}$/d' "$resp" | grep -Eq -- "$re" || fail "HTTP body does not match $EXPECT"
    ;;
  *) [ "$status" = "${EXPECT:-200}" ] || fail "HTTP status ${status:-none}, expected ${EXPECT:-200}" ;;
  esac
fi
say ok yes
