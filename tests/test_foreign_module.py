"""The checkpoint analysis in a user's own training loop: a plain Trainer of
either Lightning package (`lightning.pytorch` or `pytorch_lightning`) around a LightningModule
that is not kdmech's. The one attribute the callback needs is `student`, the Hugging Face
model being trained."""

import importlib
import json

import pytest
import torch

from kdmech.analysis.options import AnalysisSchedule
from kdmech.callbacks import CircuitAnalysisCallback
from kdmech.commands.distill import analysis_prompts
from kdmech.models import CapacitySpec, build_student, load_lm
from kdmech.run_layout import RunLayout


@pytest.mark.parametrize("package", ["lightning.pytorch", "pytorch_lightning"])
def test_callback_in_a_foreign_lightning_module(trained_teacher, tmp_path, package):
    pl = importlib.import_module(package)
    teacher, tokenizer, _ = load_lm(trained_teacher[0])
    student, _ = build_student(teacher, CapacitySpec(depth=0.5), "every_k", seed=0)

    class PlainLM(pl.LightningModule):  # a user's own module: next-token loss, nothing of kdmech
        def __init__(self, model):
            super().__init__()
            self.student = model

        def training_step(self, batch, batch_idx):
            (ids,) = batch
            return self.student(input_ids=ids, labels=ids).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    texts = ["Van done in 3. Van done in 4. Van done in 5."] * 16
    ids = torch.tensor([tokenizer(t)["input_ids"] for t in texts])
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=4)
    schedule = AnalysisSchedule(every_n_steps=2, per_type=16, min_prompts=8, circuits=False)
    prompts, competence = analysis_prompts(teacher, tokenizer, schedule)
    layout = RunLayout(tmp_path)
    callback = CircuitAnalysisCallback(teacher, tokenizer, prompts, layout, "mine", schedule,
                                       teacher_competence=competence.to_json())
    trainer = pl.Trainer(max_steps=4, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(PlainLM(student), data)

    assert [r.step for r in callback.results] == [0, 2, 4]
    saved = json.loads(layout.step_json("mine", 4).read_text())
    assert saved["step"] == 4 and 0 <= saved["alignment"]["A"] <= 1
    # the analysis read the module's own, trained student: its influence moved from step 0
    assert callback.results[0].influence["student"] != callback.results[-1].influence["student"]
