#!/bin/bash
# kiln test: helpers for the check script kiln injects into a throw-away test
# boot (never into an image). Each check's result goes to the console as one
# framed line: KILN:<index>:<exit>:<base64 stdout>:<base64 stderr>:END
# bash, not sh: the HTTP check uses bash's /dev/tcp (minimal images have no curl).

# Said first, so that a host waiting in vain can tell "never started" from "stuck".
printf '\nKILN:START:END\n' >/dev/console

out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

report() {
  printf '\nKILN:%s:%s:%s:%s:END\n' "$1" "$2" \
    "$(head -c 4096 "$out" | base64 -w0)" "$(head -c 4096 "$err" | base64 -w0)" >/dev/console
}

done_marker() {
  printf '\nKILN:DONE:END\n' >/dev/console
}
