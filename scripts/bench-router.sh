#!/usr/bin/env bash
# The router's three measurements (docs/BENCHMARKS.md, "Router"):
#   1. prefix-hash against round-robin on a shared-prefix workload: the
#      replicas' prefix-cache hit rate and TTFT;
#   2. p2c against round-robin over replicas of unequal speed (one slowed by
#      --chaos-step-delay-ms): p99 latency;
#   3. chaos: a replica killed with SIGKILL mid-run and restarted: failed
#      requests and p99.
# Each run starts fresh replicas, so no run inherits another's cache.
# Usage: scripts/bench-router.sh [SDLAB_BINARY] [MODEL]   (ONLY=1|2|3 runs one part)
set -euo pipefail
SDLAB=${1:-target/release/sdlab}
MODEL=${2:-smollm2-135m-instruct}
OUT=${OUT:-target/bench-router}
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 600); do curl -sf "$1/health" >/dev/null && return 0; sleep 0.1; done; echo "$1 never came up" >&2; exit 1; }
# replica PORT [serve flags...] -> starts it in the background, pid in LAST
replica() { local port=$1; shift; "$SDLAB" serve --model "$MODEL" --port "$port" "$@" >/dev/null 2>&1 & LAST=$!; disown "$LAST"; PIDS+=("$LAST"); }
router() { local port=$1; shift; "$SDLAB" router --port "$port" "$@" >/dev/null 2>&1 & LAST=$!; disown "$LAST"; PIDS+=("$LAST"); }
scrape_sum() { local name=$1; shift; local t=0; for u in "$@"; do v=$(curl -s "$u/metrics" | awk -v n="$name" '$1==n {print $2}'); t=$(python3 -c "print($t + ${v:-0})"); done; echo "$t"; }
stop_all() { cleanup; PIDS=(); sleep 0.5; }

summary() { # json label
  jq -r --arg l "$2" '"\($l): completed \(.completed), failed \(.failed), output \(.output_throughput|floor) tok/s, TTFT p50 \(.ttft_ms.p50|floor) ms p99 \(.ttft_ms.p99|floor) ms, E2E p50 \(.e2el_ms.p50|floor) ms p99 \(.e2el_ms.p99|floor) ms"' "$1"
}

run() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

if run 1; then
echo "== 1. prefix-hash vs round-robin: 3 replicas with 96 MB of KV each (about 2,100 tokens), 24 shared prefixes of ~256 tokens"
for policy in round-robin prefix-hash; do
  urls=()
  for _ in 1 2 3; do p=$(free_port); replica "$p" --max-num-seqs 8 --kv-cache-mb 96; urls+=("http://127.0.0.1:$p"); done
  for u in "${urls[@]}"; do wait_up "$u"; done
  rp=$(free_port); router "$rp" --replica "$(IFS=,; echo "${urls[*]}")" --policy "$policy"; wait_up "http://127.0.0.1:$rp"
  "$SDLAB" bench serve --url "http://127.0.0.1:$rp" --dataset shared-prefix --num-prefixes 24 \
    --prefix-len 256 --input-len 16 --output-len 8 --ignore-eos --num-prompts 96 \
    --request-rate 3 --seed 1 --json "$OUT/prefix-$policy.json" >/dev/null
  hits=$(scrape_sum sdlab_prefix_cache_hits_total "${urls[@]}")
  queries=$(scrape_sum sdlab_prefix_cache_queries_total "${urls[@]}")
  summary "$OUT/prefix-$policy.json" "$policy"
  python3 -c "print('  prefix-cache hit rate %.3f (%d of %d prompt tokens)' % ($hits/$queries, $hits, $queries))"
  stop_all
done
fi

if run 2; then
echo "== 2. p2c vs round-robin, 3 replicas, one slowed by 60 ms per step"
for policy in round-robin p2c; do
  urls=()
  for delay in 0 0 60; do p=$(free_port); replica "$p" --max-num-seqs 8 --chaos-step-delay-ms "$delay"; urls+=("http://127.0.0.1:$p"); done
  for u in "${urls[@]}"; do wait_up "$u"; done
  rp=$(free_port); router "$rp" --replica "$(IFS=,; echo "${urls[*]}")" --policy "$policy" --health-interval 0.5
  wait_up "http://127.0.0.1:$rp"
  "$SDLAB" bench serve --url "http://127.0.0.1:$rp" --dataset random --input-len 32 --output-len 24 \
    --ignore-eos --num-prompts 48 --request-rate 4 --seed 2 --json "$OUT/unequal-$policy.json" >/dev/null
  summary "$OUT/unequal-$policy.json" "$policy"
  stop_all
done
fi

if run 3; then
echo "== 3. chaos: 3 replicas (p2c), one killed at 4 s and restarted at 8 s"
urls=(); ports=()
for _ in 1 2 3; do p=$(free_port); replica "$p" --max-num-seqs 8; urls+=("http://127.0.0.1:$p"); ports+=("$p"); done
victim=$LAST
for u in "${urls[@]}"; do wait_up "$u"; done
rp=$(free_port); router "$rp" --replica "$(IFS=,; echo "${urls[*]}")" --policy p2c --health-interval 0.5
wait_up "http://127.0.0.1:$rp"
"$SDLAB" bench serve --url "http://127.0.0.1:$rp" --dataset random --input-len 32 --output-len 32 \
  --ignore-eos --num-prompts 60 --request-rate 4 --seed 3 --json "$OUT/chaos.json" >/dev/null &
bench=$!
sleep 4; kill -9 "$victim"; echo "  killed replica ${urls[2]}"
sleep 4; replica "${ports[2]}" --max-num-seqs 8; echo "  restarted it"
wait "$bench"
summary "$OUT/chaos.json" "chaos"
curl -s "http://127.0.0.1:$rp/metrics" | grep -E '^sdlab_router_(retries|failovers|breaker_trips)_total' | sed 's/^/  /'
fi
