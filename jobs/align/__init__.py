"""LRM alignment: LoRA + the pre-CoT auxiliary decision loss, under Ray Train + DeepSpeed."""
