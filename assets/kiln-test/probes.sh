# kiln: probes shared by test checks (kiln test) and health checks (A/B
# updates). bash, not sh: the HTTP probe uses bash's /dev/tcp (minimal images
# have no curl).

# Units may still be starting just after the target is reached: let them settle.
unit_state() {
  local s
  for _ in $(seq 1 60); do
    s=$(systemctl is-active "$1")
    case $s in activating | deactivating | reloading) sleep 1 ;; *) break ;; esac
  done
  echo "$s"
}

# A TCP port in state LISTEN (0A) in /proc/net/tcp or tcp6; waits up to 30 s.
listening() {
  local hex
  hex=$(printf '%04X' "$1")
  for _ in $(seq 1 30); do
    awk -v p="$hex" '$4 == "0A" && $2 ~ (":" p "$") { f = 1 } END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

# The status code of an HTTP/1.0 GET, from the status line.
http_status() {
  local rest=${1#http://} hostport path host port line
  hostport=${rest%%/*}
  path=/${rest#*/}
  [ "$rest" = "$hostport" ] && path=/
  host=${hostport%%:*}
  port=${hostport##*:}
  [ "$port" = "$hostport" ] && port=80
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
  IFS= read -r -t 10 line <&3
  exec 3>&-
  line=${line%$'\r'}
  echo "${line#* }" | cut -d' ' -f1
}
