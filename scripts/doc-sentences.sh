#!/usr/bin/env bash
# Sentences from the Python 3.11 docs (tutorial, FAQ, HOWTOs) for the
# embedding-throughput benchmark: whitespace folded, split after . ? !,
# 100 to 500 characters (mean about 55 MiniLM tokens, like the peer's set in
# ../shared/BASELINES.md), the first N.
# Usage: scripts/doc-sentences.sh DOC_DIR [N=2000] > sentences.txt
set -euo pipefail
dir=${1:?usage: $0 DOC_DIR [N]}
n=${2:-2000}
cat "$dir"/tutorial/*.rst.txt "$dir"/faq/*.rst.txt "$dir"/howto/*.rst.txt \
  | tr -s ' \n' ' ' \
  | sed 's/\([.?!]\) /\1\n/g' \
  | awk 'length($0) >= 100 && length($0) <= 500' \
  | head -n "$n"
