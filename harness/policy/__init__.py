"""The workflow generator: prompts, models (tiny, smol, any HF id), LoRA, sampling, checkpoints.

Torch and transformers are imported inside the submodules that need them."""
