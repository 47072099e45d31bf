"""Distillation of one or several students from one frozen teacher (docs/method.md §11.1).

The teacher reads each batch once, however many students learn from it. Causal LMs: KL and CE
(next token) at every real position. Masked LMs: the batch is corrupted once by a `BertMasker`
(15%, 80/10/10), the teacher and every student read the same corrupted tokens, and KL and the
MLM CE are taken at the masked positions; the hidden cosine is at every real token in both
cases."""

from __future__ import annotations

import lightning as L
import torch

from kdmech.distill import seeding
from kdmech.distill.lm_module import adamw_with_warmup
from kdmech.distill.losses import LossWeights, causal_lm_ce, hidden_cosine, kd_kl, masked_lm_ce
from kdmech.distill.masking import BertMasker
from kdmech.errors import KdmechError


def teacher_outputs(teacher, batch):
    return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   output_hidden_states=True)


def distillation_terms(student, t, batch, layer_map: list[int], w: LossWeights,
                       projection=None, held_out: bool = False) -> dict[str, torch.Tensor]:
    """The three loss terms and their weighted sum for one student, given the teacher's
    outputs `t` on the same batch (computed once, however many students share them). A batch
    with "labels" is a masked-LM batch: KL and CE at the masked positions. `held_out` adds
    the convergence metrics of validation: kl_t1, KL(teacher ‖ student) at temperature 1, and
    top1_agreement, the share of those positions where the student's argmax is the teacher's."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    mask = attn.bool()
    s = student(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    if "labels" in batch:
        kl_at, ce = batch["labels"] != -100, masked_lm_ce(s.logits, batch["labels"])
    else:
        kl_at, ce = mask, causal_lm_ce(s.logits, ids, mask)
    # hidden_states[0] is the embedding output and hidden_states[i + 1] block i's output (HF
    # applies the final LayerNorm to the last one). every_k maps last layer to last layer,
    # so both sides of that pair are post-LayerNorm.
    out = {
        "kl": kd_kl(s.logits, t.logits, kl_at, w.temperature),
        "ce": ce,
        "cos": hidden_cosine([s.hidden_states[i + 1] for i in range(len(layer_map))],
                             [t.hidden_states[j + 1] for j in layer_map], mask, projection),
    }
    out["loss"] = w.alpha_kl * out["kl"] + w.alpha_ce * out["ce"] + w.alpha_cos * out["cos"]
    if held_out:
        s_logits, t_logits = s.logits[kl_at].float(), t.logits[kl_at].float()
        out["kl_t1"] = kd_kl(s_logits, t_logits, torch.ones(len(s_logits), dtype=torch.bool,
                                                            device=s_logits.device), 1.0)
        out["top1_agreement"] = (s_logits.argmax(-1) == t_logits.argmax(-1)).float().mean()
    return out


def teacher_ce(t, batch) -> torch.Tensor:
    """The teacher's own CE on a batch (next token, or at the masked positions)."""
    if "labels" in batch:
        return masked_lm_ce(t.logits, batch["labels"])
    return causal_lm_ce(t.logits, batch["input_ids"], batch["attention_mask"].bool())


def module_keys(names) -> dict[str, str]:
    """Student name → its key in the module's ModuleDicts (keys may not hold dots; student
    names such as d0.5-w1-h1 do)."""
    keys = {name: name.replace(".", "_") for name in names}
    if len(set(keys.values())) != len(keys):
        raise KdmechError(f"student names {list(keys)} collide once dots become underscores")
    return keys


class DistillationModule(L.LightningModule):
    """Trains every student of `students` (name → model; one student is the one-entry case)
    against a frozen `teacher` whose logits and hidden states are computed once per batch.

    The teacher is in eval mode, has no gradients, is not in the optimizer and is left out of
    checkpoints (it is reloaded from its own folder). `layer_maps[name][i]` is the teacher
    layer whose output layer i of student `name` is pulled towards by the cosine term; a
    learned projection per narrower student bridges the widths (trained with it, saved in
    checkpoints). The students' losses are summed: they share no parameters, so each gets
    exactly the gradient it would get alone. With a `masker` (BERT students) every batch is
    corrupted once, before the teacher's and every student's forward. Masking and dropout are
    drawn from (seed, step) (`kdmech.distill.seeding`), so resuming at any checkpoint is exact.

    Logged keys: train/kl, train/ce, train/cos, train/loss for one student; with several,
    train/<name>/<term> per student and train/loss for the sum (val/ likewise). Validation
    also logs, on the held-out split, val/teacher_ce and val/teacher_ppl, and per student
    val/[<name>/]ppl (exp of its CE), kl_t1 (KL(teacher ‖ student) at temperature 1) and
    top1_agreement. `val_every`: validate only at global steps that are multiples of it (the
    trainer's validation loop may run more often, e.g. at checkpoints; those runs log nothing)."""

    strict_loading = False  # checkpoints hold no teacher weights

    def __init__(self, teacher, students: dict, layer_maps: dict[str, list[int]],
                 weights: LossWeights = LossWeights(), lr: float = 1e-3, warmup_steps: int = 50,
                 masker: BertMasker | None = None, seed: int = 0, val_every: int | None = None):
        super().__init__()
        if not students or set(students) != set(layer_maps):
            raise KdmechError(f"one layer map per student: students {list(students)}, "
                              f"layer maps {list(layer_maps)}")
        self.teacher, self.masker = teacher, masker
        self.teacher.eval().requires_grad_(False)
        self.keys = module_keys(students)
        self.students = torch.nn.ModuleDict({self.keys[n]: s for n, s in students.items()})
        d_t = teacher.config.hidden_size
        self.projections = torch.nn.ModuleDict({
            self.keys[n]: torch.nn.Linear(s.config.hidden_size, d_t, bias=False)
            for n, s in students.items() if s.config.hidden_size != d_t})
        self.layer_maps = {n: [int(j) for j in m] for n, m in layer_maps.items()}
        self.weights, self.lr, self.warmup_steps, self.seed = weights, lr, warmup_steps, seed
        self.val_every = val_every

    # --- the students ------------------------------------------------------------------------
    def student_named(self, name: str):
        return self.students[self.keys[name]]

    def projection_named(self, name: str):
        return self.projections[self.keys[name]] if self.keys[name] in self.projections else None

    @property
    def student(self):
        """The student of a one-student module."""
        return self.student_named(self._only())

    @property
    def projection(self):
        """The projection of a one-student module (None when it is as wide as the teacher)."""
        return self.projection_named(self._only())

    def _only(self) -> str:
        if len(self.keys) != 1:
            raise KdmechError(f"this module trains {len(self.keys)} students; use student_named")
        return next(iter(self.keys))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # dropout and friends stay off in the teacher
        return self

    # --- training ----------------------------------------------------------------------------
    def losses(self, batch, key: tuple[int, ...] | None = None, held_out: bool = False) -> dict[str, torch.Tensor]:
        """One student: its terms (kl, ce, cos, loss). Several: <name>/<term> for each and
        loss, the sum of their losses. `key` picks the masker's random stream (BERT; None: the
        masker's own generator). `held_out`: also the validation metrics (teacher_ce; per
        student kl_t1 and top1_agreement)."""
        if self.masker is not None:  # one corruption for the teacher and every student
            batch = self.masker(batch, key)
        with torch.no_grad():
            t = teacher_outputs(self.teacher, batch)
        per_student = {name: distillation_terms(self.student_named(name), t, batch, self.layer_maps[name],
                                                self.weights, self.projection_named(name), held_out)
                       for name in self.keys}
        if len(per_student) == 1:
            out = dict(next(iter(per_student.values())))
        else:
            out = {f"{name}/{k}": v for name, terms in per_student.items() for k, v in terms.items()}
            out["loss"] = sum(terms["loss"] for terms in per_student.values())
        if held_out:
            with torch.no_grad():
                out["teacher_ce"] = teacher_ce(t, batch)
        return out

    def _log_terms(self, stage: str, terms: dict, **kw) -> None:
        one = len(self.keys) == 1
        self.log_dict({f"{stage}/{k}": v for k, v in terms.items() if one or k != "loss"}, prog_bar=one, **kw)
        if not one:
            self.log(f"{stage}/loss", terms["loss"], prog_bar=True, **kw)

    def _validating_now(self) -> bool:
        return not self.val_every or self.global_step % self.val_every == 0

    def training_step(self, batch, batch_idx):
        terms = self.losses(batch, seeding.step_key(self, seeding.TRAIN, self.global_step))
        self._log_terms("train", terms)
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._ce_sums: dict[str, list] = {}

    def validation_step(self, batch, batch_idx):
        if not self._validating_now():
            return
        terms = self.losses(batch, seeding.step_key(self, seeding.VALIDATION, batch_idx), held_out=True)
        for key in [k for k in terms if k == "ce" or k.endswith("/ce") or k == "teacher_ce"]:
            self._ce_sums.setdefault(key, []).append(terms[key].detach().float())
        self._log_terms("val", terms, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Perplexities: exp of the mean held-out CE (teacher's and each student's)."""
        if not self._validating_now() or not getattr(self, "_ce_sums", None):
            return
        ppl = {f"val/{k[:-2]}ppl": torch.stack(v).mean().exp() for k, v in self._ce_sums.items()}
        self.log_dict(ppl, sync_dist=True)

    def configure_optimizers(self):
        # students' parameters, then the projections (the order of older checkpoints)
        return adamw_with_warmup([p for n, p in self.named_parameters() if not n.startswith("teacher.")],
                                 self.lr, self.warmup_steps)

    # --- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("teacher.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Reads older one-student checkpoints (`student.*`, `projection.*`) too, and refuses a
        checkpoint that lacks any student weight (loading is not strict: no teacher in it)."""
        state = checkpoint["state_dict"]
        if len(self.keys) == 1 and any(k.startswith("student.") for k in state):
            key = next(iter(self.keys.values()))
            renamed = {"student.": f"students.{key}.", "projection.": f"projections.{key}."}
            checkpoint["state_dict"] = state = {
                next((new + k[len(old):] for old, new in renamed.items() if k.startswith(old)), k): v
                for k, v in state.items()}
        missing = [k for k in self.state_dict() if not k.startswith("teacher.") and k not in state]
        if missing:
            raise KdmechError(f"the checkpoint does not hold these students' weights ({len(missing)} "
                              f"tensors missing, e.g. {missing[0]}); resume with the same students")
