"""Model families: what differs between GPT-2, BERT and Llama-layout decoders, declared in one place.

A family record says what a model *is*: which Hugging Face model types load into it
(DistilBERT is converted to BERT's layout), how its prompts are framed and read
(`kdmech.tasks.forms`), how a student is built from a teacher, which class specifies a tiny
teacher, how the TransformerLens bridge is driven, and whether the residual stream is
additive. How upper layers act on a family is registered there, by family name: the ablation
engine's fast runners in `kdmech.analysis.ablation.runners`, the training-batch masker of a
masked LM in `kdmech.distill.masking`. So this module imports nothing above `models/`.

That last one is a capability, declared rather than inferred from whether an optimisation
exists: path patching (edges), direct logit attribution and OV probes send one component's
write along one path to one final LayerNorm, which is only true of a pre-LayerNorm model. A
family without it has them refused with its `residual_note` as the reason.

Adding a family (say Llama):
1. a student builder `build_<x>_student(teacher, capacity, init, seed, importance, shape) →
   (student, provenance)` with its `dims`, `shape` and `student_config` (see
   `models/capacity.py`), a `WidthTable` for init importance (`models/importance.py`), and a
   `TinySpec` subclass with `build(tokenizer, seed)` (see `models/tiny.py`);
2. a `ModelFamily(...)` in `FAMILIES` below, its capabilities declared honestly; its kind
   ("causal" or "masked") picks the prompt form, a new way of reading prompts goes in
   `tasks/forms.py`;
3. nothing else is needed for node ablation and circuits: the engine uses the bridge
   reference when no runner is registered for the family. A runner is optional
   (`kdmech.analysis.ablation.contract`: `Runner` for node ablation, `ResidualRunner` for
   edges and the residual probes), registered in `kdmech/analysis/ablation/runners.py`, exact
   against the reference (test it as tests/test_ablation_vs_hf.py does); an additive family
   without a `ResidualRunner` has edges and residual probes refused with a message saying so;
4. a masked LM registers its training-batch masker in `kdmech/distill/masking.py`;
5. add the family to tests/test_family.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable

from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from kdmech.errors import KdmechError
from kdmech.models.bert_student import bert_config, bert_dims, bert_shape, build_bert_student
from kdmech.models.capacity import build_gpt2_student, gpt2_config, gpt2_dims, gpt2_shape
from kdmech.models.distilbert import distilbert_to_bert
from kdmech.models.llama_student import build_llama_student, llama_config, llama_dims, llama_shape
from kdmech.models.tiny import TinyBertSpec, TinyGPT2Spec, TinySpec
from kdmech.models.tiny_llama import LLAMA_TYPES, TinyLlamaSpec
from kdmech.tasks.forms import ModelKind, PromptForm, prompt_form


@dataclass(frozen=True)
class ModelFamily:
    name: str
    kind: ModelKind
    """How its prompts are framed and read (`tasks.forms.FORMS`)."""
    model_types: tuple[str, ...]
    """Hugging Face `config.model_type`s that load into this family."""
    auto_model: type
    """The transformers Auto class that loads its checkpoints."""
    additive_residual: bool
    """Every block adds its writes to one residual stream read through one final LayerNorm:
    path patching (edges), direct logit attribution and OV probes are valid."""
    residual_note: str
    """What the residual stream is, in a few words (the reason when probes are refused)."""
    build_student: Callable
    """(teacher, CapacitySpec, init, seed=, importance=, shape=) → (student, provenance)."""
    dims: Callable
    """config → its shape (n_layer, d_model, d_mlp, n_head[, n_kv_head]), the keys of a student's shape."""
    shape: Callable
    """(teacher config, CapacitySpec) → the student's shape (refusing shapes the family cannot take)."""
    student_config: Callable
    """(teacher config, shape) → the student's config (what `build_student` instantiates)."""
    tiny_teacher: type[TinySpec]
    """The spec class of this family's tiny teacher."""
    tiny_teacher_lr: float = 3e-3
    """Default peak learning rate of its tiny teacher."""
    tiny_task: str = "numerals"
    """The task the quickstart reads on its tiny teacher when the user asks for numerals."""
    tiny_task_note: str = ""
    """Why `tiny_task` differs from numerals, printed when it does."""
    bridge_attention_mask: bool = False
    """The TransformerLens bridge matches Hugging Face only when the attention mask is passed."""
    start_at_layer: bool = True
    """A bridge forward may start at a block and read the answer through ln_final and the
    unembedding (TransformerLens' start_at_layer); otherwise every ablation set is one full
    forward (the reference)."""
    converts: dict[str, Callable] = field(default_factory=dict, compare=False, hash=False)
    """model_type → conversion into this family's own layout, applied on load."""

    @property
    def form(self) -> PromptForm:
        return prompt_form(self.kind)

    @property
    def cloze(self) -> bool:
        """Its tasks take the cloze form (the answer is a [MASK] slot)."""
        return self.form.cloze

    def convert(self, model):
        """`model` in this family's own layout (DistilBERT → BERT), else itself."""
        convert = self.converts.get(model.config.model_type)
        return convert(model) if convert else model

    def refusal(self, what: str) -> str:
        """Why `what`, which reads the residual stream as a sum of writes, is refused here."""
        return (f"{what} refused for the {self.name} family: it assumes an additive residual "
                f"stream read through one final LayerNorm, and {self.name} has {self.residual_note}; "
                f"refused rather than computed wrongly")

    def require_additive_residual(self, what: str) -> None:
        if not self.additive_residual:
            raise KdmechError(self.refusal(what))


FAMILIES: dict[str, ModelFamily] = {
    "gpt2": ModelFamily(
        "gpt2", "causal", ("gpt2",), AutoModelForCausalLM, additive_residual=True,
        residual_note="pre-LayerNorm blocks: each adds its writes to the residual stream",
        build_student=build_gpt2_student, dims=gpt2_dims, shape=gpt2_shape, student_config=gpt2_config,
        tiny_teacher=TinyGPT2Spec),
    "bert": ModelFamily(
        "bert", "masked", ("bert", "distilbert"), AutoModelForMaskedLM, additive_residual=False,
        residual_note="post-LayerNorm blocks: each block's LayerNorm renormalises the sum of "
                      "every path, so no write stays separate",
        build_student=build_bert_student, dims=bert_dims, shape=bert_shape, student_config=bert_config,
        tiny_teacher=TinyBertSpec,
        tiny_teacher_lr=1e-3,  # post-LayerNorm: less stable at GPT-2's rate
        tiny_task="numerals-any-start",
        tiny_task_note="the cloze numerals renumbered to 1..4 always answer 5, which a tiny BERT "
                       "can read off the slot's position; the starts 1..8 are kept",
        bridge_attention_mask=True, start_at_layer=False,
        converts={"distilbert": distilbert_to_bert}),
    "llama": ModelFamily(
        "llama", "causal", LLAMA_TYPES, AutoModelForCausalLM, additive_residual=True,
        residual_note="pre-RMSNorm blocks: each adds its writes to the residual stream",
        build_student=build_llama_student, dims=llama_dims, shape=llama_shape, student_config=llama_config,
        tiny_teacher=TinyLlamaSpec,
        # TransformerLens' start_at_layer still runs the blocks before it (and would need the
        # rotary embeddings): without the runner every ablation set is one full forward
        start_at_layer=False),
}

LLAMA_ONLY = ("n_kv_head", "model_type")
"""`TinySpec` fields only the Llama family's tiny teacher reads."""


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise KdmechError(f"family {name!r} is unknown; accepted: {list(FAMILIES)}")
    return FAMILIES[name]


def model_types(kind: ModelKind | None = None) -> set[str]:
    """The model_types of every family (of one kind)."""
    return {t for f in FAMILIES.values() if kind in (None, f.kind) for t in f.model_types}


def family_of(model_or_config) -> ModelFamily:
    """The family of a Hugging Face model or config, by its model_type."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise KdmechError(f"model type {model_type!r} belongs to no model family; accepted: "
                      f"{sorted(model_types())}")


def tiny_spec(family: str, sizes: TinySpec) -> TinySpec:
    """The tiny teacher of `family` with the sizes of `sizes`."""
    cls = get_family(family).tiny_teacher
    if not issubclass(cls, TinyLlamaSpec):
        given = [f for f in LLAMA_ONLY if getattr(sizes, f) is not None]
        if given:
            raise KdmechError(f"--tiny.{given[0]} {getattr(sizes, given[0])!r} is for the llama family's "
                              f"tiny teacher only, not {family}'s")
    return cls(**{f.name: getattr(sizes, f.name) for f in fields(TinySpec)})
