#!/bin/sh
# The build a sensor should run: otwatch optimised with a profile of its own runs
# (profile-guided optimisation, PGO) and fat LTO (Cargo.toml's `dist` profile).
# benches/README.md ("Session 24") has what it gains. The plain `cargo build --release` stays
# the build that needs nothing but the Rust toolchain, and the quick one.
#
#   contrib/build-pgo.sh [CAPTURE_OR_DIR...]
#   OTWATCH_FEATURES=libpcap contrib/build-pgo.sh      # with cargo features
#
# Builds target/pgo/otwatch in three steps:
#   1. an instrumented build (-Cprofile-generate), in target/pgo-work/gen;
#   2. training: it replays the training captures in each of the ways a sensor runs (dissection
#      alone; learning; detection against the baseline it learned; the same with two workers;
#      learning and detection with events out), and llvm-profdata merges their counts;
#   3. the build again, with the merged profile (-Cprofile-use), in target/pgo-work/use.
#
# The training captures: the arguments (captures, or directories searched for .pcap, .pcapng
# and .pcap.gz), by default fixtures/ and the corpus ($OTWATCH_CORPUS, else ../shared/pcaps,
# where there is one). The benchmark captures are made of the corpus's traffic: a profile
# trained without the captures they are made of gave the same gains (benches/README.md).
# tests/pgo.rs checks that the build does what the plain one does
# (OTWATCH_PGO_BIN=target/pgo/otwatch cargo test --test pgo).
#
# Needs the toolchain's own llvm-profdata (its LLVM must read what rustc's LLVM wrote):
#   rustup component add llvm-tools
set -eu
here=$PWD
root=$(cd "$(dirname "$0")/.." && pwd)
# The captures are named from where the script was started: made absolute before the cd.
absolute() { case $1 in /*) echo "$1" ;; *) echo "$here/$1" ;; esac; }
for a in "$@"; do
    p=$(absolute "$a")
    if [ ! -e "$p" ]; then
        echo "build-pgo: $a: no such capture or directory" >&2
        exit 2
    fi
    set -- "$@" "$p"
    shift
done
if [ $# -eq 0 ]; then
    set -- "$root/fixtures"
    if [ -n "${OTWATCH_CORPUS:-}" ]; then
        set -- "$@" "$(absolute "$OTWATCH_CORPUS")"
    elif [ -d "$root/../shared/pcaps" ]; then
        set -- "$@" "$root/../shared/pcaps"
    fi
fi
cd "$root"
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    echo "build-pgo: $profdata not found; install it with: rustup component add llvm-tools" >&2
    exit 2
fi
# The profile's flags go to cargo in CARGO_ENCODED_RUSTFLAGS (one flag per 0x1f-separated
# field: a path with a space stays one flag), after the words of RUSTFLAGS. That variable
# overrides RUSTFLAGS and any `rustflags` of a .cargo/config.toml (this repository has none);
# set already, the profile's flags could not be added to it.
if [ -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
    echo "build-pgo: CARGO_ENCODED_RUSTFLAGS is set: give extra flags in RUSTFLAGS instead" >&2
    exit 2
fi
sep=$(printf '\037')
extra=$(printf '%s' "${RUSTFLAGS:-}" | awk -v s="$sep" '{ for (i = 1; i <= NF; i++) printf "%s%s", $i, s }')
work=$root/target/pgo-work
list=$work/captures
rm -rf "$work/profiles"
mkdir -p "$work/profiles" target/pgo
find "$@" -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.pcap.gz' \) | sort >"$list"
if [ ! -s "$list" ]; then
    echo "build-pgo: no capture to train on in: $*" >&2
    exit 2
fi
echo "build-pgo: training on $(wc -l <"$list") captures" >&2

# With --target, the flags reach otwatch and its dependencies but not build scripts or
# procedural macros, which would otherwise write profiles of their own as they run.
# OTWATCH_FEATURES: cargo features for both builds (e.g. libpcap, for `live --libpcap`).
features=${OTWATCH_FEATURES:+--features=$OTWATCH_FEATURES}
build() { # FLAG TARGET-DIR
    CARGO_ENCODED_RUSTFLAGS="$extra$1" cargo build --profile dist --locked --bin otwatch \
        --target "$host" --target-dir "$2" ${features:+"$features"}
}

build "-Cprofile-generate=$work/profiles" "$work/gen"
gen="$work/gen/$host/dist/otwatch"
set -f
IFS='
'
# shellcheck disable=SC2046 # one argument per line of the list
set -- $(cat "$list")
unset IFS
set +f
# A training run that finds damage in a capture exits 1, and its profile is written all the
# same; any other failure (a usage error, a panic, or a worker's panic, which exits 1 too and
# says "made a worker panic" even with --quiet) stops the build.
train() { # WHAT OTWATCH-ARGUMENTS...
    echo "build-pgo: training: $1" >&2
    shift
    status=0
    "$gen" "$@" >/dev/null 2>"$work/training.err" || status=$?
    if [ "$status" -gt 1 ] || grep -q 'worker panic' "$work/training.err"; then
        tail -5 "$work/training.err" >&2
        echo "build-pgo: the training run failed (exit status $status)" >&2
        exit 1
    fi
}
base=$work/baseline.json
train "dissection alone" replay --quiet "$@"
train "learning a baseline" learn "$@" -o "$base"
train "detection against it" replay --quiet --baseline "$base" --alerts /dev/null "$@"
train "detection, two workers" replay --quiet --workers 2 --baseline "$base" --alerts /dev/null "$@"
train "learning and detection, events out" replay --quiet --learn 60s --alerts /dev/null \
    --events /dev/null "$@"
"$profdata" merge -o "$work/otwatch.profdata" "$work/profiles"
# A profile of otwatch's own functions, or the build below would be a plain one.
functions=$("$profdata" show "$work/otwatch.profdata" | sed -n 's/^Total functions: //p')
if [ "${functions:-0}" -lt 1000 ]; then
    echo "build-pgo: the profile holds ${functions:-no} functions: the training did not run" >&2
    exit 1
fi

build "-Cprofile-use=$work/otwatch.profdata" "$work/use"
cp "$work/use/$host/dist/otwatch" target/pgo/otwatch
echo "build-pgo: target/pgo/otwatch" >&2
