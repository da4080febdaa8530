"""Function-preserving deepening of a ``UNet2DConditionModel``: one more layer in every down and up block.

Net2DeeperNet (Chen, Goodfellow and Shlens, "Net2Net", ICLR 2016, section 2.2): a new layer initialised to the
identity leaves the network's function unchanged, so training resumes from the old model's loss with more capacity.
Here the new layers are residual, so the identity is a zero init:

* a new ``ResnetBlock2D`` outputs ``shortcut(x) + conv2(...)``; with ``conv2`` at zero it returns its input;
* a new ``Transformer2DModel`` adds ``proj_out(...)`` to its input; with ``proj_out`` at zero it returns its input;
* an up block's resnet also takes a skip connection (``cat([h, skip])``); the new one gets a 1x1 ``conv_shortcut`` of
  ``[I | 0]``, so it passes ``h`` through and ignores its skip until training opens it.

Skip bookkeeping: a down block with ``L + 1`` layers pushes its new layer's output (a copy of the layer before, as the
new layer is the identity) next to that layer's. The matching up block pops skips in reverse, so the new up layer goes
at position 1: the old layer 0 pops the copy (the same tensor it popped before), the new layer pops the original, and
the old layers 1.. pop what they popped before.

    python -m editor.train.deepen --from data/models/embedded/unet --out runs/deep/unet
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

_LAYER = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$")


def _source_key(key: str, layers: int) -> str | None:
    """The old model's key for the deepened model's ``key``; ``None`` for a new layer's parameter."""
    m = _LAYER.match(key)
    if m is None:
        return key
    path, block, kind, j, rest = m.group(1), m.group(2), m.group(3), int(m.group(4)), m.group(5)
    if path == "down_blocks":
        old = j if j < layers else None
    else:
        old = 0 if j == 0 else None if j == 1 else j - 1
    return None if old is None else f"{path}.{block}.{kind}.{old}.{rest}"


def _new_layers(unet: UNet2DConditionModel, layers: int):
    """The deepened model's new ``(path, resnet, attention or None)`` layers."""
    for path, blocks, j in (("down", unet.down_blocks, layers), ("up", unet.up_blocks, 1)):
        for block in blocks:
            attn = block.attentions[j] if hasattr(block, "attentions") else None
            yield path, block.resnets[j], attn


@torch.no_grad()
def deepen(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of ``unet`` with ``layers_per_block + 1`` that computes the same function (new layers are identities)."""
    layers = unet.config.layers_per_block
    if not isinstance(layers, int):
        raise ValueError(f"deepen needs one layers_per_block for every block, got {layers!r}")
    deep = UNet2DConditionModel.from_config({**unet.config, "layers_per_block": layers + 1})
    old = unet.state_dict()
    state = deep.state_dict()
    for key in state:
        src = _source_key(key, layers)
        if src is not None:
            state[key] = old[src]
    deep.load_state_dict(state)
    for path, resnet, attn in _new_layers(deep, layers):
        resnet.conv2.weight.zero_()
        resnet.conv2.bias.zero_()
        if path == "up":  # pass h through, ignore the skip: conv_shortcut = [I | 0]
            w = resnet.conv_shortcut.weight
            w.zero_()
            w[:, : w.shape[0], 0, 0] = torch.eye(w.shape[0])
            resnet.conv_shortcut.bias.zero_()
        if attn is not None:
            attn.proj_out.weight.zero_()
            attn.proj_out.bias.zero_()
    if (deep.device, deep.dtype) != (unet.device, unet.dtype):
        deep = deep.to(device=unet.device, dtype=unet.dtype)
    return deep.train(unet.training)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="src", type=Path, required=True, help="UNet folder (save_pretrained layout)")
    p.add_argument("--out", type=Path, required=True, help="where to save the deepened UNet")
    a = p.parse_args(argv)
    unet = UNet2DConditionModel.from_pretrained(a.src)
    deep = deepen(unet)
    deep.save_pretrained(a.out)
    count = lambda m: sum(t.numel() for t in m.parameters()) / 1e6
    print(f"layers_per_block {unet.config.layers_per_block} -> {deep.config.layers_per_block}, "
          f"{count(unet):.2f} M -> {count(deep):.2f} M parameters, saved to {a.out}")


if __name__ == "__main__":
    main()
