#!/usr/bin/env bash
# Load an export with transformers 4.45 (the oldest 4.x that hookunlearn's exports target) beside
# the venv's transformers 5, and print the tokenizer's encoding and the model's logits from each.
# Needs the package registry (pip); not part of `make test`.  Usage: scripts/check_transformers4.sh EXPORT_DIR
set -euo pipefail
export_dir=${1:?usage: $0 EXPORT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
py=$root/.venv/bin/python
target=${TF4_DIR:-/tmp/hookunlearn-tf4}
[ -d "$target/transformers" ] || "$py" -m pip install --quiet --target "$target" \
    'transformers==4.45.2' 'tokenizers<0.21' 'huggingface_hub<1.0' safetensors
check='
import sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tok("The capital of France is")["input_ids"]
logits = AutoModelForCausalLM.from_pretrained(sys.argv[1])(torch.tensor([ids])).logits[0, -1]
print(transformers.__version__, type(tok).__name__, ids, [round(float(v), 4) for v in logits[:4]])
'
PYTHONPATH=$target "$py" -c "$check" "$export_dir" 2>/dev/null
"$py" -c "$check" "$export_dir" 2>/dev/null
