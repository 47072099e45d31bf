"""The option vocabularies of the analyses, each defined once (docs/method.md §3, §6, §7, §12).

A `Literal` here types the option dataclasses (so `--help` lists the choices and a bad value
is refused by the parser) and the algorithms' arguments alike; `choices(...)` gives its values
for the checks of the Python API.
"""

from __future__ import annotations

from typing import Literal, get_args

from kdmech.errors import KdmechError

Ablation = Literal["mean", "zero", "resample"]
"""How an ablated node's activation is replaced (`ablation.reference.AblationKind`)."""
MlpSimilarity = Literal["auto", "svd3", "cka", "authors"]
"""How two MLPs are compared (`matching.mlp_similarity`)."""
Direction = Literal["student_to_teacher", "teacher_to_student", "hungarian"]
"""Which way nodes are matched (`matching.assign`)."""
Normalization = Literal["sum", "max"]
"""How influence is normalised inside A (`alignment`)."""
PresetName = Literal["kdmech", "authors"]
"""Whose conventions (`presets.PRESETS`)."""
Discovery = Literal["exact", "eap", "eap-ig", "auto"]
"""How circuits are found: exact pruning, or attribution verified exactly (`attribution.discovery`)."""
SenderSource = Literal["auto", "intact", "circuit_ablated"]
"""Where path patching takes a sender's corrupted activation: the intact corrupted run
(kdmech's), the corrupted run with the nodes outside the circuit ablated (the authors'), or
auto: the preset's choice (`circuit.path_patching`)."""
AttributionDtype = Literal["float32", "bfloat16"]
"""The dtype attribution's forward-backward runs in (scores are summed in float32)."""
AnalysisDtype = Literal["float32", "bfloat16"]
"""The dtype `kdmech analyze` loads both models in (docs/method.md §3.2: the read-out, metrics
and every score from them stay float32)."""


def choices(vocabulary) -> tuple[str, ...]:
    return get_args(vocabulary)


def check_choice(what: str, value, vocabulary) -> None:
    """A one-line error naming `value` and the accepted ones, unless it is one of them."""
    if value not in choices(vocabulary):
        raise KdmechError(f"{what} {value!r} is unknown; accepted: {list(choices(vocabulary))}")
