"""Gradient attribution of nodes and edges (EAP, EAP-IG) as a pre-screen that exact ablation
verifies (docs/method.md §5.5).

- `scores`: the attribution path and its scores (one forward-backward per path point);
- `adapter`, `adapters`: where a family's node outputs and receiver inputs are (GPT-2, BERT,
  the Llama family with grouped-query attention);
- `paths`: the paths of circuit discovery, from an ablation engine;
- `verified`: the circuit from scores, checked and pruned by exact ablation;
- `agreement`: rank correlation, top-k overlap and Jaccard against exact;
- `discovery`: `--analysis.discovery exact|eap|eap-ig|auto`.
"""
