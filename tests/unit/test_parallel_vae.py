"""The VAE decode split over 2 gloo ranks (parallel.vae, DistVAE) equals one process's decode.

Each case runs two fresh interpreters on the tiny HunyuanVideo VAE: `rows` shards the latent rows (halo
exchange per convolution, reduced group norms), `tiles` deals whole tiles out (tiling on, with tiles
small enough that the tiny latents make four of them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from parallel.vae import VaeSplit
from serve.ports import free_port
from tests.support import finish, python_process

# One rank: decode the same seeded latents whole, then split over both ranks; save both (rank 0).
RANK_SCRIPT = """
import json, os, sys, traceback
import numpy as np, torch, torch.distributed as dist
args = json.loads(sys.argv[1])
try:
    from diffusers import AutoencoderKLHunyuanVideo
    from parallel.vae import split_vae_decode
    dist.init_process_group("gloo", init_method=args["init"], world_size=2, rank=args["rank"])
    vae = AutoencoderKLHunyuanVideo.from_pretrained(args["vae"])
    if args["tiles"]:
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32,
                          tile_sample_stride_height=24, tile_sample_stride_width=24)
    latents = torch.randn(1, vae.config.latent_channels, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        whole = vae.decode(latents).sample
        split = split_vae_decode(vae, dist.new_group([0, 1]), args["rank"], 2)
        shared = vae.decode(latents).sample
    if args["rank"] == 0:
        np.savez(args["out"], whole=whole.numpy(), shared=shared.numpy(), split=str(split))
    dist.destroy_process_group()
except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
"""


def decode_on_two_ranks(vae: Path, tiles: bool, out: Path) -> dict[str, np.ndarray]:
    init = f"tcp://127.0.0.1:{free_port()}"
    ranks = [
        python_process(
            RANK_SCRIPT,
            json.dumps({"init": init, "rank": rank, "vae": str(vae), "tiles": tiles, "out": str(out)}),
        )
        for rank in range(2)
    ]
    results = [finish(rank, timeout_s=180) for rank in ranks]
    assert all(code == 0 for code, _ in results), results[0][1][-3000:] + results[1][1][-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize(
    ("tiles", "split", "bound"),
    [(False, VaeSplit.ROWS, 1e-4), (True, VaeSplit.TILES, 0.0)],
    ids=["rows", "tiles"],
)
def test_a_2_rank_split_decode_matches_the_whole_decode(tiny_dir, tmp_path, tiles, split, bound):
    result = decode_on_two_ranks(tiny_dir / "hunyuanvideo" / "vae", tiles, tmp_path / "decoded.npz")
    assert str(result["split"]) == split
    assert result["shared"].shape == result["whole"].shape == (1, 3, 9, 64, 64)
    # Rows: halos and reduced norms reorder float sums (measured 3.5e-6); tiles: each tile decoded whole.
    assert np.abs(result["shared"] - result["whole"]).max() <= bound
