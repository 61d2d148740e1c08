#!/usr/bin/env bash
# Times `escx package verify` of a 1 GiB package against `b3sum --num-threads 2` on the
# same file, in one run, and prints the ratio and escx's peak resident memory.
#
#   benches/compare-verify.sh            # 1 GiB, 7 rounds
#   SIZE_MIB=256 ROUNDS=5 benches/compare-verify.sh
#
# Needs b3sum (installed with `cargo install b3sum` if missing). Both tools run on a
# warm page cache, alternating, and the median of each is compared.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-7}
THREADS=${THREADS:-2}

cargo build --release -q -p escx-cli
ESCX=$PWD/target/release/escx
if ! command -v b3sum >/dev/null; then
  cargo install --locked -q b3sum
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pkg"
printf '[package]\nname = "bench/big"\nversion = "1.0.0"\n' > "$work/pkg/manifest.toml"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$work/pkg/big.bin"
"$ESCX" key generate --out "$work/k" --unencrypted >/dev/null
"$ESCX" package pack "$work/pkg" -o "$work/big.escx" --key "$work/k.key" >/dev/null
rm "$work/pkg/big.bin"

python3 - "$ESCX" "$work" "$ROUNDS" "$THREADS" <<'PY'
import os, statistics, subprocess, sys, time
escx, work, rounds, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
package = os.path.join(work, "big.escx")
commands = {
    "escx verify": [escx, "package", "verify", package, "--pubkey", os.path.join(work, "k.pub")],
    f"b3sum --num-threads {threads}": ["b3sum", "--num-threads", threads, package],
}
env = dict(os.environ, RAYON_NUM_THREADS=threads)

def run(argv):
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{argv[0]} failed with status {status}")
    return elapsed, usage.ru_maxrss  # KiB on Linux

with open(package, "rb") as f:  # warm the page cache
    while f.read(1 << 24):
        pass
times = {name: [] for name in commands}
rss = {name: 0 for name in commands}
for _ in range(rounds):
    for name, argv in commands.items():
        elapsed, peak = run(argv)
        times[name].append(elapsed)
        rss[name] = max(rss[name], peak)
size = os.path.getsize(package)
print(f"package: {size / 2**20:.0f} MiB, {rounds} rounds, RAYON_NUM_THREADS={threads}")
for name in commands:
    median = statistics.median(times[name])
    print(f"  {name:<24} median {median * 1000:7.1f} ms  {size / median / 2**30:5.2f} GiB/s  peak RSS {rss[name] / 1024:7.1f} MiB")
escx_median = statistics.median(times["escx verify"])
b3_median = statistics.median(times[f"b3sum --num-threads {threads}"])
print(f"ratio escx/b3sum: {escx_median / b3_median:.3f}x (goal <= 1.15x); escx peak RSS {rss['escx verify'] / 1024:.1f} MiB (goal < 64 MiB)")
PY
