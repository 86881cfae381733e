"""Wan's VAE decoded in pieces (serve/causal_decode.py) against its own decode of the whole clip: the tiny
SkyReels-V2 checkpoint's VAE, random latents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from serve.causal_decode import CausalLatentDecoder


@pytest.fixture(scope="module")
def vae(tiny_dir: Path):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan.from_pretrained(str(tiny_dir / "skyreels-v2-df-720p" / "vae")).eval()


@pytest.mark.parametrize("pieces", [[9], [1, 8], [4, 3, 2]], ids=["whole", "first-alone", "three"])
def test_latents_decoded_in_pieces_give_the_frames_of_one_decode(vae, pieces):
    latents = torch.randn(1, 16, sum(pieces), 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = vae.decode(latents, return_dict=False)[0]
        decoder = CausalLatentDecoder(vae)
        start, parts = 0, []
        for size in pieces:
            parts.append(decoder.decode(latents[:, :, start : start + size]))
            start += size
    streamed = torch.cat(parts, dim=2)
    # 9 latent frames: 1 + 4 x 8 = 33 frames; each piece's frames are final when it is decoded.
    assert streamed.shape == whole.shape and whole.shape[2] == 33
    expected = [4 * size - 3 * (index == 0) for index, size in enumerate(pieces)]
    assert [part.shape[2] for part in parts] == expected
    assert torch.allclose(streamed, whole, atol=1e-6)


def test_normalising_matches_the_pipelines_scaling(vae):
    latents = torch.randn(1, 16, 2, 4, 4)
    config = vae.config
    mean = torch.tensor(config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(config.latents_std).view(1, 16, 1, 1, 1)
    assert torch.allclose(CausalLatentDecoder(vae).normalised(latents), latents * std + mean, atol=1e-6)
