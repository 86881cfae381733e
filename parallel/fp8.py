"""FP8 weights for the transformer, FP8 GEMMs where the GPU has them, an 8-bit / nf4 text encoder.

- Storage (any device): `enable_layerwise_casting` keeps Linear/Conv weights as float8_e4m3fn and casts each
  layer to the compute dtype (bf16 on a GPU, fp32 on the CPU) for its forward: less memory, same kernels.
  HunyuanVideo's official FP8 is this kind (weights cast to bf16 per matmul).
- GEMMs (CUDA compute capability >= 8.9: Ada, Hopper): torchao's float8 dynamic activation + weight
  quantization runs the matmuls themselves in FP8 on the tensor cores.
- Text encoder: transformers' `BitsAndBytesConfig` loads the Llama encoder 8-bit or nf4 (works on the CPU
  through transformers; nf4 there needs out_features divisible by 32 and in_features by the 64-wide
  quantization block, which the real encoder's 4096/14336 widths are).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

FP8_STORAGE_DTYPE = torch.float8_e4m3fn
FP8_GEMM_MIN_CAPABILITY = (8, 9)
# bitsandbytes' CPU nf4 kernel packs weights in blocks of 32 output rows and 64-wide input blocks.
NF4_CPU_OUT_MULTIPLE = 32
NF4_CPU_IN_MULTIPLE = 64
# The transformer's blocks hold nearly all its weights; embedders and norms stay in the compute dtype.
FP8_GEMM_MODULES = ("transformer_blocks.", "single_transformer_blocks.")


class ParameterBytes(BaseModel):
    """A module's parameter bytes in its compute dtype and as stored."""

    compute_bytes: int = Field(description="bytes if every parameter were held in the compute dtype")
    stored_bytes: int = Field(description="bytes as the parameters are stored now")
    fp8_parameters: int = Field(description="parameter elements stored as FP8")

    @property
    def saved_bytes(self) -> int:
        return self.compute_bytes - self.stored_bytes

    @property
    def ratio(self) -> float:
        return self.stored_bytes / self.compute_bytes if self.compute_bytes else 1.0

    def describe(self) -> str:
        gib = 1 << 30
        return (
            f"{self.compute_bytes / gib:.3f} GiB -> {self.stored_bytes / gib:.3f} GiB "
            f"({self.saved_bytes / gib:.3f} GiB saved, {100 * (1 - self.ratio):.0f}%)"
        )


def _is_fp8(dtype: torch.dtype) -> bool:
    return dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)


def parameter_bytes(module: torch.nn.Module, compute_dtype: torch.dtype) -> ParameterBytes:
    """Count `module`'s parameter bytes as stored and as they would be in `compute_dtype`."""
    compute_size = torch.empty((), dtype=compute_dtype).element_size()
    compute = stored = fp8 = 0
    for parameter in module.parameters():
        count = parameter.numel()
        stored += count * parameter.element_size()
        if _is_fp8(parameter.dtype):
            fp8 += count
            compute += count * compute_size
        else:
            compute += count * parameter.element_size()
    return ParameterBytes(compute_bytes=compute, stored_bytes=stored, fp8_parameters=fp8)


def store_fp8(model: Any, compute_dtype: torch.dtype) -> ParameterBytes:
    """Store a diffusers model's Linear/Conv weights as float8_e4m3fn, computed in `compute_dtype`."""
    model.enable_layerwise_casting(storage_dtype=FP8_STORAGE_DTYPE, compute_dtype=compute_dtype)
    return parameter_bytes(model, compute_dtype)


def fp8_gemms_supported(device: torch.device | None = None) -> bool:
    """True on a CUDA GPU of compute capability 8.9+ (Ada, Hopper and later)."""
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= FP8_GEMM_MIN_CAPABILITY


def enable_fp8_gemms(model: torch.nn.Module, modules: tuple[str, ...] = FP8_GEMM_MODULES) -> int:
    """Quantize the Linear layers under `modules` to torchao float8 (dynamic activations); returns how many.

    Raises RuntimeError off a GPU of capability 8.9+, where torchao has no FP8 matmul.
    """
    if not fp8_gemms_supported():
        found = torch.cuda.get_device_capability() if torch.cuda.is_available() else "no CUDA GPU"
        raise RuntimeError(
            f"FP8 GEMMs need a CUDA GPU of compute capability >= 8.9 (found {found}); "
            "use FP8 weight storage (store_fp8) instead"
        )
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    selected: list[str] = []

    def wanted(module: torch.nn.Module, name: str) -> bool:
        hit = isinstance(module, torch.nn.Linear) and name.startswith(modules)
        if hit:
            selected.append(name)
        return hit

    quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=wanted)
    return len(selected)


class TextEncoderQuantization(StrEnum):
    """How the (Llama) text encoder is loaded."""

    NONE = "none"
    INT8 = "8bit"
    NF4 = "nf4"


def bitsandbytes_config(mode: TextEncoderQuantization, compute_dtype: torch.dtype) -> Any:
    """transformers' BitsAndBytesConfig for `mode` (None for NONE)."""
    from transformers import BitsAndBytesConfig

    if mode is TextEncoderQuantization.INT8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if mode is TextEncoderQuantization.NF4:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
        )
    return None


def nf4_incompatible_layers(model: torch.nn.Module) -> list[str]:
    """Linear layers whose widths bitsandbytes' CPU nf4 kernel cannot run (see NF4_CPU_*_MULTIPLE)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (module.in_features % NF4_CPU_IN_MULTIPLE or module.out_features % NF4_CPU_OUT_MULTIPLE)
    ]


def load_text_encoder(
    path: str | Path, mode: TextEncoderQuantization, compute_dtype: torch.dtype, model_class: Any = None
) -> torch.nn.Module:
    """Load a checkpoint's `text_encoder` with `mode`, ready to pass as `text_encoder=` to from_pretrained."""
    if model_class is None:
        from transformers import LlamaModel as model_class
    kwargs: dict[str, Any] = {"dtype": compute_dtype}
    config = bitsandbytes_config(mode, compute_dtype)
    if config is not None:
        kwargs["quantization_config"] = config
        if not torch.cuda.is_available():
            kwargs["device_map"] = "cpu"
    model = model_class.from_pretrained(str(Path(path) / "text_encoder"), **kwargs).eval()
    if mode is TextEncoderQuantization.NF4 and not torch.cuda.is_available():
        bad = nf4_incompatible_layers(model)
        if bad:
            raise ValueError(
                f"nf4 on the CPU needs Linear in_features divisible by {NF4_CPU_IN_MULTIPLE} and "
                f"out_features by {NF4_CPU_OUT_MULTIPLE}; not: {', '.join(bad[:5])}; use 8bit or none"
            )
    return model
