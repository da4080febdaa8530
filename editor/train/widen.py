"""Widening of a ``UNet2DConditionModel``'s highest-resolution features (Net2WiderNet) for more capacity there.

Net2WiderNet (Chen, Goodfellow and Shlens, "Net2Net", ICLR 2016, section 2.1): a layer's ``c`` output units become
``k c`` by copying each unit ``k`` times, and every layer that reads them splits each old input weight over its
copies, so the wider network computes the same function. Here the split is random with a zero sum
(``w / k + eps_i``, ``sum_i eps_i = 0``) rather than equal: the function is the same, and the copies, which read the
same input, get different gradients, so training can pull them apart.

The widened space is ``block_out_channels[0]`` (MoViE's Mobile-Pix2Pix has no attention there, so it is convs,
GroupNorms and time projections only): the sinusoidal timestep features (diffusers sizes them by the first block;
the widened sinusoid holds the old frequencies, which the time MLP reads, and new ones it ignores until trained),
``conv_in``, the first down block, the last up block, the skips they pass
(concatenated *after* the up blocks' own features, ``cat([h, skip])``), ``conv_norm_out`` and ``conv_out``. Copy
``j`` of channel ``i`` sits at ``i k + j``, so a GroupNorm over a widened tensor sees each of its groups' channels
``k`` times and computes the same statistics. Where an up block concatenates its own (unwidened) features with a
widened skip, the group boundaries move, so the function is kept only approximately there; ``widen`` is exact up to
those norms, and ``python -m editor.train.widen`` prints how far the output moved on random inputs.

    python -m editor.train.widen --from data/models/embedded/unet --out runs/wide12/unet --factor 3
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel


def channel_map(old: int, new: int, width: int, factor: int) -> torch.Tensor | None:
    """For each of ``new`` channels, the old channel it copies; ``None`` if the dimension is not widened.

    A widened dimension is ``[native | m widened segments]``: ``m`` segments of ``width`` channels (the first
    block's features or skips of them) after ``native`` channels of other blocks that keep their width."""
    if new == old:
        return None
    m, rest = divmod(new - old, width * (factor - 1))
    native = old - m * width
    if rest or native < 0:
        raise ValueError(f"a dimension of {old} -> {new} channels is not [native | m x {width}] widened x{factor}")
    tail = native + torch.arange(m * width * factor) // factor
    return torch.cat([torch.arange(native), tail])


def sinusoid_map(width: int, factor: int) -> torch.Tensor:
    """Where each of the old ``width`` timestep features sits among the widened model's ``factor * width``.

    diffusers' ``Timesteps(n)`` puts ``n / 2`` frequencies ``exp(-ln(10^4) i / (n / 2))`` into two halves (cos and
    sin); with ``factor`` times as many, old frequency ``i`` is new frequency ``factor * i`` in the same half."""
    half = width // 2
    old = torch.arange(width)
    return factor * (old % half) + (old // half) * factor * half


def _split(w: torch.Tensor, dim: int, g: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Reads of widened inputs along ``dim``: each old weight spread over its copies with a zero-sum random split."""
    counts = torch.bincount(g, minlength=w.shape[dim]).to(w.dtype)
    out = (w.index_select(dim, g) / _along(counts.index_select(0, g), dim, w.dim())).movedim(dim, 0)
    if noise > 0:
        eps = torch.randn(out.shape, generator=gen, dtype=out.dtype) * noise * out.abs()
        sums = torch.zeros((w.shape[dim],) + eps.shape[1:], dtype=eps.dtype).index_add_(0, g, eps)
        out = out + eps - (sums / _along(counts, 0, eps.dim())).index_select(0, g)  # each copy set's noise sums to 0
    return out.movedim(0, dim)


def _along(v: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return v.view(shape)


@torch.no_grad()
def widen(unet: UNet2DConditionModel, factor: int = 3, noise: float = 0.01, seed: int = 0) -> UNet2DConditionModel:
    """A copy of ``unet`` with ``block_out_channels[0]`` times ``factor`` (see the module docstring)."""
    if factor < 2:
        raise ValueError(f"factor must be at least 2, got {factor}")
    width = unet.config.block_out_channels[0]
    channels = [width * factor] + list(unet.config.block_out_channels[1:])
    if len(channels) > 1 and channels[0] == channels[1]:
        raise ValueError(f"a first block of {channels[0]} channels, as wide as the second, would drop the second "
                         "block's 1x1 input shortcut (diffusers adds it only where the widths differ); pick another "
                         "--factor")
    groups = unet.config.norm_num_groups
    if any(c % groups for c in channels):
        raise ValueError(f"widened channels {channels} must be multiples of norm_num_groups {groups}")
    if unet.config.time_embedding_type != "positional" or unet.config.freq_shift != 0:
        raise ValueError("widen keeps the timestep features only for positional embeddings with freq_shift 0")
    time_dim = unet.config.time_embedding_dim or 4 * width  # kept, so only the sinusoid's length changes
    wide = UNet2DConditionModel.from_config({**unet.config, "block_out_channels": channels,
                                             "time_embedding_dim": time_dim})
    old, state = unet.state_dict(), wide.state_dict()
    gen = torch.Generator().manual_seed(seed)
    sinusoid = sinusoid_map(width, factor)
    for key, target in state.items():
        w = old[key]
        if key == "time_embedding.linear_1.weight":  # reads the sinusoid: the old frequencies, the rest at zero
            state[key] = torch.zeros_like(target).index_copy_(1, sinusoid, w)
            continue
        if key.startswith("time_embedding.cond_proj."):  # writes into the sinusoid (the MMG student's guidance)
            state[key] = torch.zeros_like(target).index_copy_(0, sinusoid, w)
            continue
        if w.shape == target.shape:
            state[key] = w
            continue
        g_out = channel_map(w.shape[0], target.shape[0], width, factor)
        if g_out is not None:  # this layer's outputs are copied
            w = w.index_select(0, g_out)
        if w.dim() > 1:
            g_in = channel_map(w.shape[1], target.shape[1], width, factor)
            if g_in is not None:  # and its reads of widened inputs are split
                w = _split(w, 1, g_in, noise, gen)
        if w.shape != target.shape:
            raise ValueError(f"{key}: widened to {tuple(w.shape)}, expected {tuple(target.shape)}")
        state[key] = w
    wide.load_state_dict(state)
    return wide.to(device=unet.device, dtype=unet.dtype).train(unet.training)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="src", type=Path, required=True, help="UNet folder (save_pretrained layout)")
    p.add_argument("--out", type=Path, required=True, help="where to save the widened UNet")
    p.add_argument("--factor", type=int, default=3, help="the first block's width is multiplied by this")
    p.add_argument("--noise", type=float, default=0.01, help="relative size of the zero-sum split noise")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    unet = UNet2DConditionModel.from_pretrained(a.src).eval()
    wide = widen(unet, a.factor, a.noise, a.seed).eval()
    wide.save_pretrained(a.out)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, unet.config.in_channels, 32, 32, generator=g)
    t = torch.tensor([999, 700, 400, 100])
    text = torch.randn(4, 17, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        before, after = unet(x, t, text).sample, wide(x, t, text).sample
    moved = float((after - before).pow(2).mean() / before.pow(2).mean())
    count = lambda m: sum(t.numel() for t in m.parameters()) / 1e6
    print(f"block_out_channels {list(unet.config.block_out_channels)} -> {list(wide.config.block_out_channels)}, "
          f"{count(unet):.2f} M -> {count(wide):.2f} M parameters; output change on random inputs "
          f"(relative MSE) {moved:.2e}; saved to {a.out}")


if __name__ == "__main__":
    main()
