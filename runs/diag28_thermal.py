"""Why does thermal on real_motion_graphic move away from its target as s_T rises? (student 17 and teacher 12)"""
import numpy as np, torch
from PIL import Image
from editor import edits, metrics, video_io
from editor.loading import load_family
from editor.pipeline import Editor, EditRequest
from editor.guidance import Guidance
torch.set_grad_enabled(False); torch.set_num_threads(1)
fam = load_family("data/models/embedded"); ed = Editor(fam)
src = video_io.read_clip("data/eval_clips/real_motion_graphic.mp4", short_side=256, max_frames=2, multiple=8).frames
tg = edits.all_targets(src, 0)
print("source mean rgb", src.reshape(-1, 3).mean(0).round(1), "thermal target mean", tg["thermal"].reshape(-1, 3).mean(0).round(1))
row = [src[0], tg["thermal"][0]]
for v in ("mmg", "teacher"):
    for st in (2, 5, 8, 14):
        out = ed.edit_frames(src, EditRequest("view it through a heat camera", Guidance(text=st, image=1.5), variant=v)).frames
        sc = metrics.target_psnrs(out, tg)
        top = sorted(sc.items(), key=lambda kv: -kv[1])[:3]
        print(v, st, "mean rgb", out.reshape(-1, 3).mean(0).round(1), "progress %.3f" % metrics.edit_progress(out, src, tg["thermal"]),
              "top", [(k, round(x, 2)) for k, x in top])
        if v == "mmg": row.append(out[0])
Image.fromarray(np.concatenate(row, 1)).save("runs/diag28_thermal.png")
