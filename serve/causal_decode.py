"""Wan's VAE decode in pieces: latent frames decoded one at a time with the decoder's causal cache kept
between calls, so a clip decoded a window at a time gives the frames of one decode of the whole clip.

`AutoencoderKLWan._decode` runs the same loop over all latent frames at once and clears its cache before
and after; here the cache lives as long as the clip. Spatial tiling does not apply (a piece is one latent
frame, so memory is that of one frame at full size; a VAE with tiling on is decoded untiled, with a
warning). Under model CPU offload the VAE is moved to the device first, as `vae.decode` would.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


class CausalLatentDecoder:
    """Decodes the next latent frames of one clip (normalised as the pipeline hands them to `vae.decode`)."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae
        # The decoder's causal convolutions, each with its cached frames (what `clear_cache` makes).
        self.cache: list[Any] = [None] * vae._cached_conv_counts["decoder"]
        self.decoded = 0  # latent frames decoded so far
        if getattr(vae, "use_tiling", False):
            log.warning("VAE tiling does not apply to a clip decoded window by window: decoding untiled")

    def normalised(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents as the pipeline scales them before its decode (the same operations, in order)."""
        config = self.vae.config
        latents = latents.to(self.vae.dtype)
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(shape).to(latents.device, latents.dtype)
        return latents / inverse_std + mean

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The pixels (batch, channels, frames, height, width; in [-1, 1]) of the next latent frames."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae = self.vae
        hook = getattr(vae, "_hf_hook", None)  # accelerate's offload hook, which `vae.decode` would run
        if hook is not None:
            hook.pre_forward(vae)
        x = vae.post_quant_conv(latents)  # a 1x1x1 convolution: frame by frame
        pieces = []
        for index in range(x.shape[2]):
            pieces.append(
                vae.decoder(
                    x[:, :, index : index + 1],
                    feat_cache=self.cache,
                    feat_idx=[0],
                    first_chunk=self.decoded == 0,
                )
            )
            self.decoded += 1
        out = torch.cat(pieces, dim=2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return torch.clamp(out, min=-1.0, max=1.0)
