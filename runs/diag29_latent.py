"""Stop 29 diagnostic: is the s_T outlier (thermal on real_motion_graphic: pixel edit strength falls as s_T rises)
made in the latent or by the decoder? Latent progress of the student's output along s_T against pixel strength, and
pixel strength of decoded straight-line extrapolations z_src + a (z_tgt - z_src)."""
import sys
import numpy as np, torch
from editor import edits, metrics, video_io
from editor.loading import load_family
from editor.pipeline import Editor, EditRequest, frames_to_images, images_to_frames
from editor.guidance import Guidance
torch.set_grad_enabled(False)
clip, fam_id, instr = (sys.argv[1:4] + [None] * 3)[:3] if len(sys.argv) > 1 else (None, None, None)
clip = clip or "real_motion_graphic.mp4"; fam_id = fam_id or "thermal"
instr = instr or edits.get_family(fam_id).paraphrases[0]
fam = load_family("data/models/embedded"); ed = Editor(fam)
src = video_io.read_clip(f"data/eval_clips/{clip}", short_side=256, max_frames=2, multiple=8).frames
tgt = edits.all_targets(src, 0)[fam_id]
z_s, z_t = fam.encode(frames_to_images(src)), fam.encode(frames_to_images(tgt))
d = (z_t - z_s).flatten()
captured = {}
plain = ed._decode
ed._decode = lambda z, batch=16: captured.setdefault("z", z) is None or plain(z, batch)
def lat_progress(z): return float(((z - z_s).flatten() @ d) / (d @ d))
print(clip, fam_id, repr(instr))
for v in ("mmg", "teacher"):
    for st in (1, 2, 5, 8, 11, 14):
        captured.clear()
        out = ed.edit_frames(src, EditRequest(instr, Guidance(text=st, image=1.5), variant=v)).frames
        z = captured["z"]
        print(f"{v:8s} s_T {st:4.1f}  latent progress {lat_progress(z):.3f}  latent |z| {z.abs().mean():.3f}  "
              f"pixel strength {metrics.edit_strength(out, src):.3f} progress {metrics.edit_progress(out, src, tgt):.3f} "
              f"mean rgb {out.reshape(-1, 3).mean(0).round(0)}")
for a in (0.5, 1.0, 1.25, 1.5, 2.0):
    out = images_to_frames(fam.decode(z_s + a * (z_t - z_s)))
    print(f"decode(z_src + {a} dz): pixel strength {metrics.edit_strength(out, src):.3f} progress "
          f"{metrics.edit_progress(out, src, tgt):.3f} mean rgb {out.reshape(-1, 3).mean(0).round(0)}")
