"""Hugging Face checkpoints in and out: config.json <-> ModelConfig (hf_config), tensor
name/layout maps (hf, tensor_map), streaming sharded safetensors I/O (safetensors_io),
export (export). See docs/real_models.md."""
