"""Probe (stop 29): does guidance rescale (Lin et al. 2024, 'Common diffusion noise schedules and sample steps are
flawed', Eq. 15-16; diffusers' rescale_noise_cfg) make the teacher's edit strength rise monotonically with s_T?
Usage: PYTHONPATH=. python runs/diag29_rescale.py PHI [evaluate args...]  (no --cache: the cache key ignores PHI)."""
import sys
import torch
import editor.guidance as G
import editor.mmg as M
from editor import evaluate

phi = float(sys.argv[1])
plain = G.combine


def rescaled(uncond, image, full, g):
    out = plain(uncond, image, full, g)
    if phi == 0:
        return out
    dims = list(range(1, out.ndim))
    r = out * (full.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True))
    return phi * r + (1 - phi) * out


G.combine = rescaled
M.combine = rescaled
torch.set_grad_enabled(False)
evaluate.main(sys.argv[2:])
