"""Facts about the published LayerDiffusion SDXL files that the fixtures rebuild (see shared spec)."""

# The attn file's rank-256 LoRA covers these projections of every transformer block (not attn2 k/v).
LORA_TARGETS = (".attn1.to_q.weight", ".attn1.to_k.weight", ".attn1.to_v.weight", ".attn1.to_out.0.weight",
                ".attn2.to_q.weight", ".attn2.to_out.0.weight")
