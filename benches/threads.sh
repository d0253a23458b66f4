#!/bin/sh
# Where two workers' instructions go, thread by thread, against one worker's: a figure for the
# two-worker speed-up that does not move with the host (callgrind counts instructions; a busy
# or virtual machine's timings swing by more than the differences looked for).
#
#   benches/threads.sh CAPTURE [LEARN]
#
# Runs detection (learning LEARN, default 60s) with one worker, then with two under callgrind
# (--separate-threads=yes), and prints each thread's instructions and what they bound:
#   - each thread does its share alone (the reader, the calling thread, reads, hands out,
#     merges and runs detection), so one worker's total / the busiest thread's is the most two
#     workers can gain with a core for each thread;
#   - on two cores the three threads share two: one worker's total / (two workers' total / 2,
#     or the busiest thread's where that is more) is the most they can gain there, and less,
#     as scheduling is never perfect.
# Instructions are not time (cache misses, the cores' hand-over), but they are what the code
# asks of the machine: a change that takes work off the reader or the hand-over shows here
# whatever the host is doing. Needs valgrind, bc and a release build (OTWATCH=path; default
# target/release/otwatch). A 300 MB capture takes a few minutes.
set -eu
cap=${1:?usage: threads.sh CAPTURE [LEARN]}
learn=${2:-60s}
otw=${OTWATCH:-target/release/otwatch}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

summary() { # callgrind output file -> its instruction count
    sed -n 's/^summary: //p' "$1" | head -1
}

run() { # what, then the command: its output kept, and shown if it fails
    what=$1
    shift
    if ! "$@" >"$tmp/log" 2>&1; then
        echo "threads.sh: $what failed:" >&2
        tail -5 "$tmp/log" >&2
        exit 1
    fi
}

run "one worker under callgrind" valgrind --tool=callgrind --callgrind-out-file="$tmp/one" \
    "$otw" replay --quiet --learn "$learn" --alerts /dev/null "$cap"
run "two workers under callgrind" valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$tmp/two" \
    "$otw" replay --quiet --workers 2 --learn "$learn" --alerts /dev/null "$cap"

one=$(summary "$tmp/one")
reader=$(summary "$tmp/two-01")
total=0
workers=""
for f in "$tmp"/two-*; do
    n=$(summary "$f")
    total=$((total + n))
    [ "$f" = "$tmp/two-01" ] || workers="$workers $n"
done
gi() { printf '%.3f' "$(echo "$1 / 1000000000" | bc -l)"; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
busiest=$reader
for n in $workers; do
    [ "$n" -gt "$busiest" ] && busiest=$n
done
half=$((total / 2))
bound2=$busiest
[ "$half" -gt "$bound2" ] && bound2=$half
echo "capture: $cap, learn $learn, detection, instructions (callgrind)"
echo "one worker                 $(gi "$one") G"
echo "two workers, all threads   $(gi "$total") G   $(ratio "$total" "$one")x one worker's"
echo "  the reader               $(gi "$reader") G"
for n in $workers; do
    [ "$n" -gt 10000000 ] && echo "  a worker                 $(gi "$n") G"
done
echo "most two workers can gain: $(ratio "$one" "$busiest")x with a core per thread (the busiest thread's share)"
echo "                           $(ratio "$one" "$bound2")x on two cores (half of all threads' work, or the busiest's)"
