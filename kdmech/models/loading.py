"""Load a teacher or student: a Hugging Face hub name or a local `save_pretrained` folder.

The same code path serves `gpt2` from the hub and the tiny teachers kdmech trains itself; the
tests exercise it on folders they write. Failures are `KdmechError`s naming the value.

Models load in float32 unless a dtype is asked for (`kdmech analyze --analysis.dtype
bfloat16`): transformers 5 would otherwise keep a checkpoint's own dtype (bf16 for Llama 3.1
and Qwen), and analyses must not depend on how a checkpoint was saved.

No code from a model folder or the hub ever runs: every family is an architecture built into
transformers, so `trust_remote_code` is passed as False everywhere (a config's `auto_map`
pointing at Python files is ignored) and there is no flag to turn it on.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerFast
from transformers.models.auto.tokenization_auto import get_tokenizer_config

from kdmech.errors import KdmechError
from kdmech.models.family import family_of, model_types

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _check_source(name_or_path: str) -> None:
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise KdmechError(f"model folder {name_or_path!r} has no config.json; expected a "
                              f"folder written by save_pretrained or a hub name such as 'gpt2'")
        return
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local or not _HUB_ID.match(name_or_path):
        raise KdmechError(f"model {name_or_path!r} is neither an existing folder nor a hub name "
                          f"(like 'gpt2' or 'org/model')")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so an offline machine fails in seconds instead of
    sitting through huggingface_hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _local_only(name_or_path: str) -> bool:
    """True when the files must come from disk: a folder, or a hub name already cached or
    unreachable (then a cache miss is reported at once)."""
    if Path(name_or_path).exists():
        return True
    try:
        AutoConfig.from_pretrained(name_or_path, local_files_only=True, trust_remote_code=False)
        return True
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise KdmechError(f"model {name_or_path!r} is not in the local Hugging Face cache and "
                          f"the hub cannot be reached; pass a local save_pretrained folder")
    return False


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _load(name_or_path: str | Path, types: set[str], role: str, dtype: str = "float32"):
    name_or_path = str(name_or_path)
    _check_source(name_or_path)
    local = _local_only(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=local, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise KdmechError(f"cannot load model {name_or_path!r}: {_first_line(e)}") from None
    if config.model_type not in types:
        raise KdmechError(f"model {name_or_path!r} is a {config.model_type!r}; {role}teachers "
                          f"and students must be one of {sorted(types)}")
    family = family_of(config)
    try:
        model = family.auto_model.from_pretrained(name_or_path, attn_implementation="eager", dtype=DTYPES[dtype],
                                                   local_files_only=local, trust_remote_code=False)
        tokenizer = _tokenizer(name_or_path, local)
    except (OSError, ValueError) as e:
        raise KdmechError(f"cannot load model {name_or_path!r}: {_first_line(e)}") from None
    return family.convert(model), tokenizer


GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""tokenizer_config classes of a plain tokenizer.json (kdmech's word tokenizer saves as one)."""


def _tokenizer(name_or_path: str, local: bool):
    """The checkpoint's tokenizer. A plain tokenizer.json is read as it is: AutoTokenizer would
    pick the model type's own class (Qwen2Tokenizer for a qwen2 model), whose pre-tokenizer
    replaces the saved one (kdmech's word tokenizer then splits "10" into "1" "0")."""
    config = get_tokenizer_config(name_or_path, local_files_only=local)
    if config.get("tokenizer_class") in GENERIC_TOKENIZERS:
        return PreTrainedTokenizerFast.from_pretrained(name_or_path, local_files_only=local)
    return AutoTokenizer.from_pretrained(name_or_path, local_files_only=local, trust_remote_code=False)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_causal_lm(name_or_path: str | Path):
    """(model in eval mode, tokenizer) for a causal LM (GPT-2 or Llama family)."""
    model, tokenizer = _load(name_or_path, model_types("causal"), "causal ")
    return model.eval(), tokenizer


def load_masked_lm(name_or_path: str | Path):
    """(BertForMaskedLM in eval mode, tokenizer) for a BERT or DistilBERT masked LM.
    DistilBERT checkpoints are converted to BERT's layout (TransformerLens' bridge refuses
    DistilBERT; the conversion keeps the logits)."""
    model, tokenizer = _load(name_or_path, model_types("masked"), "masked-LM ")
    return model.eval(), tokenizer


def load_lm(name_or_path: str | Path, dtype: str = "float32"):
    """(model in eval mode, tokenizer, kind): a causal LM (GPT-2, Llama, Mistral, Qwen2, Qwen3)
    or a BERT/DistilBERT ("masked", DistilBERT converted as in `load_masked_lm`), whichever the
    config names, in `dtype` (float32 or bfloat16)."""
    if dtype not in DTYPES:
        raise KdmechError(f"dtype {dtype!r} is unknown; accepted: {list(DTYPES)}")
    model, tokenizer = _load(name_or_path, model_types(), "", dtype)
    return model.eval(), tokenizer, model_kind(model)


def model_kind(model) -> str:
    """The kind of the model's family: "masked" for BERT, "causal" for GPT-2 and Llama."""
    return family_of(model).kind
