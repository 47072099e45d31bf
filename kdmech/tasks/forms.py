"""How each kind of model reads a prompt, declared once per kind.

A causal LM reads a text after a BOS token and predicts the next token, so the answer is read
at the last position and right padding never reaches earlier positions. A masked LM reads a
text between [CLS] and [SEP] and fills a [MASK] slot inside it (the task's cloze form), so the
answer is read at that token and right padding would be attended to. Prompt sets, the
training corpus and the model families (`kdmech.models.family`) read a `PromptForm` instead of
testing the kind's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kdmech.errors import KdmechError

ModelKind = Literal["causal", "masked"]


@dataclass(frozen=True)
class PromptForm:
    kind: ModelKind
    cloze: bool
    """The answer is a [MASK] slot inside the prompt, read at that token (the task's cloze
    form); otherwise it is the next token, read at the last one."""
    padding_hidden: bool
    """Right padding cannot reach earlier positions (causal attention), so prompts of
    different lengths may be right-padded to one."""
    opening: str
    """Tokenizer attribute of the token before a text's ids (skipped when the tokenizer has
    none)."""
    closing: str | None = None
    """Tokenizer attribute of the token after a text's ids, if any."""

    def wrap(self, tokenizer, ids: list[int]) -> list[int]:
        """A text's ids as a model of this kind sees them."""
        start = getattr(tokenizer, self.opening)
        out = ([start] if start is not None else []) + list(ids)
        return out + [getattr(tokenizer, self.closing)] if self.closing else out

    def read_position(self, tokenizer, ids: list[int], prompt: str) -> int:
        """Where the answer of wrapped `ids` is read; a cloze prompt must hold one [MASK]."""
        if not self.cloze:
            return len(ids) - 1
        if ids.count(tokenizer.mask_token_id) != 1:
            raise KdmechError(f"masked prompt {prompt!r} must hold exactly one "
                              f"{tokenizer.mask_token!r}")
        return ids.index(tokenizer.mask_token_id)


FORMS: dict[str, PromptForm] = {
    "causal": PromptForm("causal", cloze=False, padding_hidden=True, opening="bos_token_id"),
    "masked": PromptForm("masked", cloze=True, padding_hidden=False, opening="cls_token_id",
                         closing="sep_token_id"),
}


def prompt_form(kind: ModelKind | PromptForm) -> PromptForm:
    """The form of a model kind; a one-line error names the accepted kinds."""
    if isinstance(kind, PromptForm):
        return kind
    if kind not in FORMS:
        raise KdmechError(f"model kind {kind!r} is unknown; accepted: {list(FORMS)}")
    return FORMS[kind]
