#!/bin/sh
# The pipeline's ratios, measured in one run as whole processes, interleaved, page cache warm:
#   dissection / floor (pcapwalk sum), detection / dissection, 1 worker / 2 workers, and the
#   machine's ceiling for two: two one-worker detections at once against one alone (what two
#   jobs that share nothing reach here; under 2 where the cores share execution units or
#   memory bandwidth). A reference to read the 2-worker figure against, not a strict bound,
#   and as noisy as the rest on a shared machine.
# Absolute times drift on a shared machine; the ratios within one run are the figures.
#
#   benches/ratios.sh CAPTURE [LEARN] [ROUNDS]
#
# CAPTURE: e.g. /tmp/bench-ics.pcap (churn) or a steady-state capture (benches/README.md).
# LEARN: the learning window for detection (default 60s). ROUNDS: default 5; medians reported.
# Needs: a release build (cargo build --release) and pcapwalk built from ../shared/bench/pcapwalk
# (PCAPWALK=path, default /tmp/pcapwalk/target/release/pcapwalk). With the handoff example built
# (cargo build --release --example handoff; HANDOFF=path) each two-worker run is preceded by a
# measure of how long the two cores take to hand a cache line over, and the two-worker figures
# are given again over the runs whose cores were near (under HANDOFF_NEAR ns, default 80): a
# virtual machine's vCPUs can move apart (about 30 ns to 160 ns here) and two workers then run
# at about half speed.
set -eu
cap=${1:?usage: ratios.sh CAPTURE [LEARN] [ROUNDS]}
learn=${2:-60s}
rounds=${3:-5}
otw=${OTWATCH:-target/release/otwatch}
walk=${PCAPWALK:-/tmp/pcapwalk/target/release/pcapwalk}
handoff=${HANDOFF:-target/release/examples/handoff}
near=${HANDOFF_NEAR:-80}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

secs() { # command... -> elapsed seconds on stdout
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    echo "$e - $s" | bc -l
}

secs_two() { # command... -> elapsed seconds of two copies run at once
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1 &
    "$@" >/dev/null 2>&1
    wait $!
    e=$(date +%s.%N)
    echo "$e - $s" | bc -l
}

handoff_ns() { # the cores' hand-over in ns, or "-" when it cannot be measured
    if [ -x "$handoff" ]; then
        v=$("$handoff" 200000 2>/dev/null) || v=
        case "$v" in
        '' | *[!0-9.]*) echo - ;;
        *) echo "$v" ;;
        esac
    else
        echo -
    fi
}

"$walk" sum "$cap" >/dev/null # warm the page cache
packets=$("$otw" replay "$cap" 2>&1 | sed -n 's/.* \([0-9]*\) packets,.*/\1/p' | head -1)
i=0
while [ "$i" -lt "$rounds" ]; do
    secs "$walk" sum "$cap" >>"$tmp/walk"
    secs "$otw" replay --quiet "$cap" >>"$tmp/dissect"
    h1=$(handoff_ns)
    a=$(secs "$otw" replay --quiet --workers 2 "$cap")
    secs "$otw" replay --quiet --learn "$learn" --alerts /dev/null "$cap" >>"$tmp/detect"
    h2=$(handoff_ns)
    b=$(secs "$otw" replay --quiet --workers 2 --learn "$learn" --alerts /dev/null "$cap")
    echo "$a" >>"$tmp/dissect2"
    echo "$b" >>"$tmp/detect2"
    echo "$h1 $a" >>"$tmp/handoff-dissect2"
    echo "$h2 $b" >>"$tmp/handoff-detect2"
    secs_two "$otw" replay --quiet --learn "$learn" --alerts /dev/null "$cap" >>"$tmp/pair"
    i=$((i + 1))
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
w=$(median "$tmp/walk"); d=$(median "$tmp/dissect"); d2=$(median "$tmp/dissect2")
t=$(median "$tmp/detect"); t2=$(median "$tmp/detect2"); p=$(median "$tmp/pair")
echo "capture: $cap ($packets packets), learn $learn, medians of $rounds rounds"
printf 'pcapwalk sum          %8.3f s  %12.0f packets/s\n' "$w" "$(echo "$packets / $w" | bc -l)"
printf 'dissect, 1 worker     %8.3f s  %12.0f packets/s  %5.2fx the floor\n' "$d" "$(echo "$packets / $d" | bc -l)" "$(echo "$d / $w" | bc -l)"
printf 'dissect, 2 workers    %8.3f s  %12.0f packets/s  %5.2fx faster than 1\n' "$d2" "$(echo "$packets / $d2" | bc -l)" "$(echo "$d / $d2" | bc -l)"
printf 'detect, 1 worker      %8.3f s  %12.0f packets/s  %5.2fx dissection\n' "$t" "$(echo "$packets / $t" | bc -l)" "$(echo "$t / $d" | bc -l)"
printf 'detect, 2 workers     %8.3f s  %12.0f packets/s  %5.2fx faster than 1\n' "$t2" "$(echo "$packets / $t2" | bc -l)" "$(echo "$t / $t2" | bc -l)"
printf 'ceiling for two       %8.3f s  (two 1-worker detections at once) %5.2fx: 2 workers reach %.0f%% of it\n' "$p" "$(echo "2 * $t / $p" | bc -l)" "$(echo "100 * ($t / $t2) / (2 * $t / $p)" | bc -l)"
cat "$tmp/handoff-dissect2" "$tmp/handoff-detect2" | awk '$1 != "-" {print $1}' >"$tmp/h"
if [ -s "$tmp/h" ]; then
    printf 'handoff between cores %8.1f ns median (least %.1f, most %.1f)\n' "$(median "$tmp/h")" "$(sort -n "$tmp/h" | head -1)" "$(sort -n "$tmp/h" | tail -1)"
    for kind in dissect2 detect2; do
        awk -v n="$near" '$1 != "-" && $1 < n {print $2}' "$tmp/handoff-$kind" >"$tmp/near-$kind"
    done
    nd=$(wc -l <"$tmp/near-dissect2")
    nt=$(wc -l <"$tmp/near-detect2")
    if [ "$nd" -gt 0 ] && [ "$nt" -gt 0 ]; then
        printf '  with the cores near (under %s ns; %d and %d of %d runs): 2 workers %5.2fx (dissect), %5.2fx (detect)\n' "$near" "$nd" "$nt" "$rounds" "$(echo "$d / $(median "$tmp/near-dissect2")" | bc -l)" "$(echo "$t / $(median "$tmp/near-detect2")" | bc -l)"
    else
        printf '  no two-worker run had the cores near (under %s ns): the figures above are with them far apart\n' "$near"
    fi
fi
