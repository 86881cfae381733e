"""VAE decode split over the ranks of one replica, with DistVAE (the scheme xDiT's runners use).

Every rank ends the denoising loop with the same latents, so instead of rank 0 decoding them alone while
the others wait, each rank decodes a share and the shares are gathered onto every rank:

- ``tiles`` (the VAE tiles, as with the `vae_tiling` memory option of real weights): whole tiles are dealt
  out to the ranks, each decodes its own, and the tiles are exchanged and blended; two exchanges per
  decode, the result equals the one-rank tiled decode.
- ``rows`` (no tiling): each rank decodes a band of latent rows; halos are exchanged per convolution and
  group norms reduced over the ranks. Needs at least one latent row per rank (`min_latent_rows`).

Every rank of the group must call `vae.decode` on the same latents at the same point of the request.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class VaeSplit(StrEnum):
    """How a replica's VAE decode is shared out."""

    NONE = "none"  # rank 0 decodes alone
    ROWS = "rows"
    TILES = "tiles"


def min_latent_rows(world_size: int) -> int:
    """The fewest latent rows a row-split decode accepts: one band (at least one conv halo) per rank."""
    return world_size


def split_vae_decode(vae: Any, group: Any, rank: int, world_size: int) -> VaeSplit:
    """Make `vae.decode` a collective over `group` (all `world_size` ranks); returns the scheme used."""
    from distvae.vae import (
        ParallelContext,
        mark,
        parallelize_decoder,
        sharing,
        supports_tile_parallel,
        tiled_decode_for,
    )

    if getattr(vae, "use_tiling", False) and supports_tile_parallel(vae):
        context = ParallelContext(
            group=group,
            rank=rank,
            world_size=world_size,
            patch_dim=-2,
            global_ranks=tuple(range(world_size)),
        )
        mark(vae, context)
        dispatch, assemble = sharing(context)
        decode = tiled_decode_for(vae, dispatch, assemble)
        if decode is not None:
            vae.tiled_decode = decode
            return VaeSplit.TILES
    parallelize_decoder(vae, group)
    return VaeSplit.ROWS
