"""FP8 weights: what shrinks, by how much, how close the output stays; FP8 GEMMs; 8-bit/nf4 text encoder.

Bounds (fp32 compute on the CPU, tiny random-weight HunyuanVideo): one transformer forward with FP8-stored
weights is within 3% (relative L2) of the fp32 one (measured 0.5%; bf16 weights and activations give about
5%), and the decoded frames, in [0, 1], within 0.02 max abs (measured 0.003).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

from parallel import fp8
from serve.catalog import MemoryOptions, get_spec
from serve.engine import Engine
from serve.request import RequestFields, build_request

FULL_CONFIG = {
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "num_layers": 20,
    "num_single_layers": 40,
    "num_refiner_layers": 2,
    "text_embed_dim": 4096,
    "pooled_projection_dim": 768,
    "rope_axes_dim": (16, 56, 56),
}


@pytest.fixture(scope="module")
def weights(tiny_dir: Path) -> Path:
    return tiny_dir / "hunyuanvideo"


def load_transformer(weights: Path) -> HunyuanVideoTransformer3DModel:
    return HunyuanVideoTransformer3DModel.from_pretrained(weights / "transformer").eval()


def expected_fp8_elements(model: torch.nn.Module) -> int:
    """Parameters of Linear/Conv layers outside embedders and norms: what layerwise casting stores as FP8."""
    skip = [*DEFAULT_SKIP_MODULES_PATTERN, *model._skip_layerwise_casting_patterns]
    return sum(
        parameter.numel()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Conv3d) and not any(re.search(p, name) for p in skip)
        for parameter in module.parameters(recurse=False)
    )


def forward_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 16, 3, 4, 4, generator=generator),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=generator),
        "encoder_attention_mask": torch.ones(1, 8),
        "pooled_projections": torch.randn(1, 32, generator=generator),
        "guidance": torch.tensor([6000.0]),
    }


def test_fp8_storage_stores_the_block_linears_in_e4m3_and_saves_3_bytes_each_from_fp32(weights):
    model = load_transformer(weights)
    before = fp8.parameter_bytes(model, torch.float32)
    expected = expected_fp8_elements(model)
    report = fp8.store_fp8(model, torch.float32)
    assert report.fp8_parameters == expected > 0
    assert report.compute_bytes == before.stored_bytes
    assert report.stored_bytes == before.stored_bytes - 3 * expected
    assert model.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    assert model.transformer_blocks[0].norm1.linear.weight.dtype == torch.float32  # modulation stays
    assert model.x_embedder.proj.weight.dtype == torch.float32
    assert report.ratio < 0.65  # tiny model: 41% smaller


def test_fp8_storage_saves_about_9_gb_of_the_published_transformers_25_gb():
    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**FULL_CONFIG).to(torch.bfloat16)
    report = fp8.store_fp8(model, torch.bfloat16)
    assert 25.5e9 < report.compute_bytes < 25.8e9  # 12.8B parameters in bf16
    assert 8.5e9 < report.saved_bytes < 10e9  # the official README: FP8 weights save about 10 GB


def test_fp8_storage_output_of_one_forward_stays_within_3_percent(weights):
    reference_model, fp8_model = load_transformer(weights), load_transformer(weights)
    fp8.store_fp8(fp8_model, torch.float32)
    with torch.no_grad():
        reference = reference_model(**forward_inputs()).sample
        stored = fp8_model(**forward_inputs()).sample
    assert ((stored - reference).norm() / reference.norm()).item() < 0.03


def test_fp8_storage_frames_stay_within_0_02_of_fp32(weights):
    spec = get_spec("hunyuanvideo")
    request = build_request(
        spec, spec.tiny_limits, RequestFields(model=spec.name, prompt="a red fox", seed=3)
    )
    frames = {}
    for name, memory in {"fp32": MemoryOptions(), "fp8": MemoryOptions(fp8_weights=True)}.items():
        engine = Engine(spec, str(weights), memory)
        engine.load()
        with torch.inference_mode():
            frames[name] = np.asarray(engine.pipe(**engine.pipeline_call_kwargs(request)).frames[0])
    assert np.abs(frames["fp8"] - frames["fp32"]).max() < 0.02


def test_fp8_gemms_are_refused_without_a_gpu_of_capability_8_9():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert not fp8.fp8_gemms_supported()
    with pytest.raises(RuntimeError, match=r"compute capability >= 8\.9"):
        fp8.enable_fp8_gemms(torch.nn.Linear(32, 32))


def test_text_encoder_loads_8bit_on_the_cpu_with_int8_weights(weights):
    full = fp8.load_text_encoder(weights, fp8.TextEncoderQuantization.NONE, torch.float32)
    quantized = fp8.load_text_encoder(weights, fp8.TextEncoderQuantization.INT8, torch.float32)
    assert quantized.layers[0].self_attn.q_proj.weight.dtype == torch.int8
    stored = sum(p.numel() * p.element_size() for p in quantized.parameters())
    assert stored < sum(p.numel() * p.element_size() for p in full.parameters())
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        assert torch.isfinite(quantized(input_ids=ids).last_hidden_state).all()


def test_nf4_text_encoder_needs_64_wide_inputs_on_the_cpu(weights, tmp_path):
    with pytest.raises(ValueError, match="in_features divisible by 64"):
        fp8.load_text_encoder(weights, fp8.TextEncoderQuantization.NF4, torch.float32)  # 32 wide

    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    LlamaModel(config).save_pretrained(tmp_path / "text_encoder")
    model = fp8.load_text_encoder(tmp_path, fp8.TextEncoderQuantization.NF4, torch.float32)
    assert model.layers[0].mlp.down_proj.weight.dtype == torch.uint8  # packed 4-bit
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.shape == (1, 3, 64)
