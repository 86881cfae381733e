"""Multi-GPU HunyuanVideo: degrees (config), xfuser without a GPU (cpu_compat), one rank (worker), the rank
group behind the Engine interface (group), FP8 weights (fp8)."""
