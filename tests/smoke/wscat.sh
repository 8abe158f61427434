#!/usr/bin/env bash
# Smoke test: the wscat session the README shows, against a real webchat-local process.
# Usage: tests/smoke/wscat.sh PATH/TO/webchat-local
# wscat with stdin at EOF prints nothing and exits 0, so every wscat here reads from a `sleep`
# that keeps its stdin open, and the assertions are on what it printed.
set -euo pipefail
binary=${1:?usage: wscat.sh PATH/TO/webchat-local}
root=$(cd "$(dirname "$0")/../.." && pwd)
wscat="$root/node_modules/.bin/wscat"
[ -x "$wscat" ] || { echo "wscat is not installed: run npm ci in $root" >&2; exit 1; }

work=$(mktemp -d)
server_pid= signed_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$signed_pid" ]; then kill "$signed_pid" 2>/dev/null; wait "$signed_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

start() { # start NAME [FLAG...]: webchat-local on a free port; its URL in $url, its pid in $pid
  local name=$1
  shift
  "$binary" --listen 127.0.0.1:0 "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  url=
  for _ in $(seq 100); do
    url=$(grep -o 'ws://[0-9.:]*' "$work/$name.out" | head -n 1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "webchat-local printed no ws:// URL" >&2; cat "$work/$name.err" >&2; exit 1; }
}
start server
server_pid=$pid

passed=0 failed=0
expect() { # expect NAME FILE PATTERN: FILE has a line matching the extended regex PATTERN
  if grep -Eq -- "$3" "$2"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $1: no line matching $3 in:" >&2
    cat "$2" >&2
  fi
}

# alice stays connected and listens; bob connects, broadcasts and leaves.
sleep 9 | "$wscat" -c "$url/?name=alice" >"$work/alice.out" 2>&1 &
alice=$!
sleep 1
sleep 3 | "$wscat" -c "$url" -x '{"action":"broadcast","message":"Anybody home? <b>ü</b>"}' -w 1 >"$work/bob.out" 2>&1
sleep 2 | "$wscat" -c "$url" -x '{"action":"list"}' -w 1 >"$work/list.out" 2>&1
sleep 2 | "$wscat" -c "$url" -x 'hello?' -w 1 >"$work/bad.out" 2>&1
wait "$alice" || true

expect "alice is welcomed" "$work/alice.out" '^\{"type":"welcome","connectionId":"[A-Za-z0-9_=-]{16}","user":null,"name":"alice","message":"Welcome! - connected on [A-Za-z0-9_=-]{16}"\}$'
expect "alice hears bob" "$work/alice.out" '^\{"type":"broadcast","from":"[A-Za-z0-9_=-]{16}","user":null,"name":null,"message":"Anybody home\? <b>ü</b>","sentAt":"[0-9T:.-]+Z"\}$'
expect "bob hears himself" "$work/bob.out" '"type":"broadcast".*"message":"Anybody home\? <b>ü</b>"'
expect "list names alice" "$work/list.out" '^\{"type":"connections","connections":\[.*"name":"alice".*\]\}$'
expect "bad input gets invalid_json" "$work/bad.out" '^\{"type":"error","code":"invalid_json","message":".+"\}$'

# rooms: carol in red and dave in blue hear only their rooms; erin joins red late with since 0
# and catches up on what was said there before her
sleep 8 | "$wscat" -c "$url/?name=carol" -x '{"action":"join","room":"red"}' -w 7 >"$work/carol.out" 2>&1 &
carol=$!
sleep 8 | "$wscat" -c "$url/?name=dave" -x '{"action":"join","room":"blue"}' -w 7 >"$work/dave.out" 2>&1 &
dave=$!
sleep 1
sleep 3 | "$wscat" -c "$url/?name=frank" -x '{"action":"join","room":"red"}' -x '{"action":"broadcast","room":"red","message":"red only"}' -w 1 >"$work/frank.out" 2>&1
sleep 3 | "$wscat" -c "$url/?name=gina" -x '{"action":"join","room":"blue"}' -x '{"action":"broadcast","room":"blue","message":"blue only"}' -w 1 >"$work/gina.out" 2>&1
sleep 3 | "$wscat" -c "$url/?name=erin" -x '{"action":"join","room":"red","since":0}' -w 1 >"$work/erin.out" 2>&1
wait "$carol" "$dave" || true
expect "carol hears red" "$work/carol.out" '^\{"type":"broadcast","room":"red","seq":1,"from":"[A-Za-z0-9_=-]{16}","user":null,"name":"frank","message":"red only","sentAt":"[0-9T:.-]+Z"\}$'
expect "dave hears blue" "$work/dave.out" '^\{"type":"broadcast","room":"blue","seq":1,.*"message":"blue only"'
expect "carol sees frank arrive" "$work/carol.out" '^\{"type":"presence","room":"red","event":"joined","connectionId":"[A-Za-z0-9_=-]{16}","user":null,"name":"frank"\}$'
expect "erin joins red at seq 1" "$work/erin.out" '^\{"type":"joined","room":"red","seq":1,"presence":true\}$'
expect "erin catches up" "$work/erin.out" '^\{"type":"history","room":"red","messages":\[\{"type":"broadcast","room":"red","seq":1,.*"message":"red only".*\}\],"next":null\}$'
for pair in "carol:blue only" "dave:red only"; do
  who=${pair%%:*} said=${pair#*:}
  if grep -q "$said" "$work/$who.out"; then
    failed=$((failed + 1))
    echo "FAIL: $who heard \"$said\" from a room it is not in:" >&2
    cat "$work/$who.out" >&2
  else
    passed=$((passed + 1))
  fi
done

# with sign-in: the start-up lines' own recipe, a token in the subprotocols, and none at all
start signed --dev-issuer
signed_pid=$pid
http=${url/ws:/http:}
expect "sign-in is explained at start" "$work/signed.out" "npx wscat -c \"$url/\?token=\\\$\(curl -s '$http/dev/token\?name=ada'\)\""
token=$(curl -s "$http/dev/token?name=ada")
sleep 2 | "$wscat" -c "$url/?token=$token" -x '{"action":"list"}' -w 1 >"$work/ada.out" 2>&1
expect "ada is signed in by ?token=" "$work/ada.out" '^\{"type":"welcome","connectionId":"[A-Za-z0-9_=-]{16}","user":"dev-[0-9a-f]{16}","name":"ada",'
sleep 2 | "$wscat" -c "$url" -s webchat.v1 -s "$(curl -s "$http/dev/token?name=bea")" -x '{"action":"list"}' -w 1 >"$work/bea.out" 2>&1
expect "bea is signed in by the subprotocol" "$work/bea.out" '"type":"connections".*"name":"bea"'
sleep 1 | "$wscat" -c "$url" >"$work/anonymous.out" 2>&1 || true
expect "no token is 401" "$work/anonymous.out" '401'

echo "wscat smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
