#!/bin/sh
# The cost of the network outputs on a replay, as ratios measured in one run (whole processes,
# interleaved, page cache warm; medians): detection with its alerts file alone, then with
#   --syslog tcp://… (alerts to a real rsyslog), --syslog … --syslog-events (events too),
#   --remote-write http://… --remote-write-interval 1s (to a real Prometheus), and for reference
#   --metrics (the same families and per-channel series, served instead of pushed).
#
#   benches/outputs.sh CAPTURE [LEARN] [ROUNDS]
#
# Starts its own rsyslogd and prometheus (Debian's rsyslog and prometheus) on loopback.
# Needs a release build (cargo build --release).
set -eu
cap=${1:?usage: outputs.sh CAPTURE [LEARN] [ROUNDS]}
learn=${2:-60s}
rounds=${3:-5}
otw=${OTWATCH:-target/release/otwatch}
tmp=$(mktemp -d)
sp=46514
pp=49091
cat >"$tmp/rsyslog.conf" <<CONF
global(workDirectory="$tmp" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="$sp")
template(name="raw" type="string" string="%rawmsg%\n")
if \$app-name == "otwatch" then action(type="omfile" file="$tmp/out.log" template="raw")
CONF
/usr/sbin/rsyslogd -n -f "$tmp/rsyslog.conf" -i "$tmp/rsyslog.pid" &
rs=$!
printf 'global:\n  scrape_interval: 1m\n' >"$tmp/prometheus.yml"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address=127.0.0.1:$pp --web.enable-remote-write-receiver >"$tmp/prom.log" 2>&1 &
pr=$!
trap 'kill $rs $pr 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 3

secs() { # command... -> elapsed seconds on stdout
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    e=$(date +%s.%N)
    echo "$e - $s" | bc -l
}

cat "$cap" >/dev/null # warm the page cache
packets=$("$otw" replay "$cap" 2>&1 | sed -n 's/.* \([0-9]*\) packets,.*/\1/p' | head -1)
det="--quiet --sensor-name bench --learn $learn --alerts /dev/null"
i=0
while [ "$i" -lt "$rounds" ]; do
    # shellcheck disable=SC2086
    {
        secs "$otw" replay $det "$cap" >>"$tmp/alerts"
        secs "$otw" replay $det --syslog tcp://127.0.0.1:$sp "$cap" >>"$tmp/syslog"
        secs "$otw" replay $det --syslog tcp://127.0.0.1:$sp --syslog-events "$cap" >>"$tmp/events"
        secs "$otw" replay $det --metrics 127.0.0.1:0 "$cap" >>"$tmp/metrics"
        secs "$otw" replay $det --remote-write http://127.0.0.1:$pp/api/v1/write \
            --remote-write-interval 1s "$cap" >>"$tmp/rw"
    }
    i=$((i + 1))
done
# The last round's losses, if any (a full syslog queue with --syslog-events is counted, not
# hidden): what the exit status and summary said.
# shellcheck disable=SC2086
lost=$("$otw" replay $det --syslog tcp://127.0.0.1:$sp --syslog-events "$cap" 2>&1 | grep -o 'syslog output: [0-9]* failed' || echo "syslog output: 0 failed")
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
a=$(median "$tmp/alerts"); s=$(median "$tmp/syslog"); e=$(median "$tmp/events"); r=$(median "$tmp/rw"); m=$(median "$tmp/metrics")
echo "capture: $cap ($packets packets), learn $learn, medians of $rounds rounds"
printf 'detect, alerts file        %8.3f s  %12.0f packets/s\n' "$a" "$(echo "$packets / $a" | bc -l)"
printf '+ syslog (alerts)          %8.3f s  %12.0f packets/s  %5.2fx\n' "$s" "$(echo "$packets / $s" | bc -l)" "$(echo "$s / $a" | bc -l)"
printf '+ syslog --syslog-events   %8.3f s  %12.0f packets/s  %5.2fx  (%s writes)\n' "$e" "$(echo "$packets / $e" | bc -l)" "$(echo "$e / $a" | bc -l)" "$lost"
printf '+ /metrics (for reference) %8.3f s  %12.0f packets/s  %5.2fx\n' "$m" "$(echo "$packets / $m" | bc -l)" "$(echo "$m / $a" | bc -l)"
printf '+ remote-write every 1 s   %8.3f s  %12.0f packets/s  %5.2fx\n' "$r" "$(echo "$packets / $r" | bc -l)" "$(echo "$r / $a" | bc -l)"
