"""What a run folder offers: each kind of learned output and its file name, defined once.

A run lists what it wrote in run.json as {"outputs": {kind: file name}}; `concepts` loads a run from that
list (and, for run folders older than the list, by these names).
"""

EMBEDDING = "embedding"  # the new token's vectors, diffusers' layout
EXTENDED = "embedding-extended"  # a token's sets of vectors per UNet layer and/or stage (extended_conditioning.py)
LORA = "lora"  # LoRA weights that diffusers' `load_lora_weights(folder)` reads
KOHYA_LORA = "lora-kohya"  # the same LoRA in kohya's layout, for AUTOMATIC1111 and ComfyUI
BUNDLE = "lora-bundle"  # the kohya LoRA with the embedding inside (A1111's and OneTrainer's "bundle_emb" keys)
LIDB = "lidb"  # LiDB's train matrices and the seed of its frozen projections
PIPELINE = "pipeline"  # a whole fine-tuned diffusers pipeline folder (DreamBooth)

OUTPUT_FILES = {
    EMBEDDING: "learned_embeds.safetensors",
    EXTENDED: "learned_embeds_extended.safetensors",
    LORA: "pytorch_lora_weights.safetensors",  # the name diffusers' save_lora_weights writes and its loader looks for
    KOHYA_LORA: "lora_kohya.safetensors",
    BUNDLE: "lora_bundle.safetensors",
    LIDB: "lidb_weights.safetensors",
    PIPELINE: "pipeline",
}
