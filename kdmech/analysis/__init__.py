"""Analyses as pure functions over (model, prompt set) → typed results (docs/method.md §3–8)."""

from kdmech.analysis.ablation import AblationKind, ablated_metric_mean, corrupted_activations
from kdmech.analysis.alignment import Alignment, alignment
from kdmech.analysis.bridge import Bridged, boot
from kdmech.analysis.influence import Influence, influence
from kdmech.analysis.matching import Match, assign, head_similarity, linear_cka, mlp_similarity
from kdmech.analysis.nodes import Node, all_nodes
from kdmech.analysis.pair import PairAnalysis, compare
from kdmech.analysis.profile import ModelProfile, profile

__all__ = ["AblationKind", "Alignment", "Bridged", "Influence", "Match", "ModelProfile", "Node",
           "PairAnalysis", "ablated_metric_mean", "alignment", "all_nodes", "assign", "boot",
           "compare", "corrupted_activations", "head_similarity", "influence", "linear_cka",
           "mlp_similarity", "profile"]
