"""Preference study backend: what the Study and Rate tabs call, and the command that pre-renders a study.

A study (docs/DESIGN.md section 6) is a manifest of clips x instructions x variant pairs whose edits are rendered
before any rater arrives, so raters never wait for generation.  Every rater sees the pairs in their own random
order (:func:`rater_order`), seeded by the study and rater ids so a reload gives the same order; a few gold pairs
with one plainly broken side flag careless raters (:meth:`editor.study.store.Store.rater_flags`).

    python -m editor.study create --manifest study.json [--out data/studies] [--model data/models/embedded]
    python -m editor.study list

The manifest (JSON; clip paths relative to the manifest's folder)::

    {"name": "pilot", "clips": ["clips/a.mp4", "clips/b.mp4"], "instructions": ["make it snow"],
     "variant_pairs": [["mmg", "teacher"]], "params": {"steps": 20, "s_T": 7.5, "s_I": 1.5, "seed": 0},
     "gold_pairs": 2, "max_frames": 16, "short_side": 256}

Rendering is resumable: every edit goes to a file named by a hash of what it depends on (clip bytes,
instruction, variant, params, size, model), written under a temporary name and renamed when complete, so a
second run renders only what is missing; the study is recorded in the store only once all its files exist, and
running the same manifest again returns the study already recorded.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from editor import video_io
from editor.clockwork import DEFAULT_CLOCK
from editor.guidance import Guidance
from editor.pipeline import DEFAULT_STEPS, Editor, EditRequest
from editor.study.store import Store, VoteIn, file_sha256
from editor.variants import available_variants

ADMIN_TOKEN_ENV = "MOVIE_ADMIN_TOKEN"
BROKEN_VARIANT = "broken"  # the variant name of a gold pair's plainly broken side
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "data" / "studies"

Progress = Callable[[int, int], None]  # (renders done, renders total)


# ------------------------------------------------------------------------------------------- raters (UI calls)


def rater_order(pairs: list[dict], rater_id: str, study_id: str) -> list[dict]:
    """``pairs`` in this rater's own order: a shuffle seeded by sha256(study id, rater id).

    Deterministic, so a rater who reloads the page continues where they were; different per rater, so position
    effects (fatigue, anchoring on the first pairs) average out over raters.  The input order does not matter:
    pairs are sorted by id first.
    """
    seed = int.from_bytes(hashlib.sha256(f"{study_id}\0{rater_id}".encode()).digest()[:8], "big")
    ordered = sorted(pairs, key=lambda p: p["id"])
    random.Random(seed).shuffle(ordered)
    return ordered


def next_pair(store: Store, study_id: str, rater_id: str) -> tuple[dict | None, int, int]:
    """The first pair in the rater's order they have not voted on (``None`` when done), and (done, total).

    ``done`` counts this study's pairs the rater voted on, so progress reads "done of total".  A vote counts
    wherever it was cast, as the store's one-vote-per-rater-per-key rule does: a pair whose key the rater already
    voted on (an explicit key shared with another study) could never take their vote, so it must not block them.
    """
    pairs = store.study_pairs(study_id)
    voted = {v["pair_key"] for v in store.votes(rater_id=rater_id)}
    done = sum(p["pair_key"] in voted for p in pairs)
    todo = (p for p in rater_order(pairs, rater_id, study_id) if p["pair_key"] not in voted)
    return next(todo, None), done, len(pairs)


def admin_ok(token: str | None) -> bool:
    """True when ``token`` equals ``$MOVIE_ADMIN_TOKEN``; always False when the variable is unset or empty.

    Compared with :func:`hmac.compare_digest` so the time taken does not leak how much of the token matched.
    """
    expected = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not expected or not isinstance(token, str):
        return False
    return hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))


def pair_sides(pair: Mapping) -> dict:
    """A study pair as a vote sees it: clip hash, instruction, both sides' variant, params, seed and timings, the
    study and pair ids -- the fields of :class:`VoteIn` a Rate tab needs besides the rater's choice."""
    params = dict(pair["params"])
    seed = params.pop("seed", None)
    side_params = {k: params[k] for k in ("steps", "s_T", "s_I", "clock") if k in params}
    timings = pair.get("timings") or {}
    clip_hash = pair.get("clip_hash") or file_sha256(pair["clip_path"])  # pairs from before revision 0002
    return {"study_id": pair["study_id"], "pair_id": pair["id"], "clip_hash": clip_hash,
            "instruction": pair["instruction"], "rendered_a": pair["rendered_a"], "rendered_b": pair["rendered_b"],
            **{f"{k}_{s}": v for s in ("a", "b") for k, v in (
                ("variant", pair[f"variant_{s}"]), ("params", side_params), ("seed", seed),
                ("timings", timings.get(s)))}}


def study_vote(pair: Mapping, *, rater_id: str, shown_left: str, choice: str, decide_ms: float,
               session_id: str = "", app_version: str = "") -> VoteIn:
    """The :class:`VoteIn` of a rater's ``choice`` (canonical: ``A``, ``B``, ``tie``, ``both_bad``) on a study
    pair, carrying the pair's clip hash, params and timings."""
    sides = {k: v for k, v in pair_sides(pair).items() if not k.startswith("rendered_")}
    return VoteIn(rater_id=rater_id, shown_left=shown_left, choice=choice, decide_ms=decide_ms,
                  session_id=session_id, app_version=app_version, **sides)


# ------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class StudyParams:
    """Sampler settings shared by every edit of a study (both sides of a pair use the same seed)."""

    steps: int = DEFAULT_STEPS
    s_T: float = Guidance().text
    s_I: float = Guidance().image
    seed: int = 0
    clock: int = DEFAULT_CLOCK

    def __post_init__(self):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.steps, self.seed, self.clock)):
            raise ValueError("steps, seed and clock must be integers")
        self.request("check", "teacher")  # EditRequest and Guidance check the ranges

    def request(self, instruction: str, variant: str) -> EditRequest:
        return EditRequest.from_settings(instruction, variant, s_t=self.s_T, s_i=self.s_I, steps=self.steps,
                                         seed=self.seed, clock=self.clock)


@dataclass(frozen=True)
class StudyManifest:
    """What a study compares, checked when built; paths are resolved."""

    name: str
    clips: tuple[Path, ...]
    instructions: tuple[str, ...]
    variant_pairs: tuple[tuple[str, str], ...]
    params: StudyParams = StudyParams()
    gold_pairs: int = 0
    max_frames: int = 16
    short_side: int = 256

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("the study needs a name")
        if not self.clips or not self.instructions or not self.variant_pairs:
            raise ValueError("a study needs at least one clip, one instruction and one variant pair")
        missing = [str(c) for c in self.clips if not Path(c).is_file()]
        if missing:
            raise ValueError(f"clips not found: {', '.join(missing)}")
        if any(not isinstance(i, str) or not i.strip() for i in self.instructions):
            raise ValueError("instructions must be non-empty strings")
        if any(len(p) != 2 or p[0] == p[1] or BROKEN_VARIANT in p for p in self.variant_pairs):
            raise ValueError(f"variant pairs must be two different variants, got {self.variant_pairs}")
        if not 0 <= self.gold_pairs <= len(self.clips) * len(self.instructions):
            raise ValueError(f"gold_pairs must be from 0 to clips x instructions "
                             f"({len(self.clips) * len(self.instructions)}), got {self.gold_pairs}")
        if self.max_frames < 1 or self.short_side < 8:
            raise ValueError("max_frames must be at least 1 and short_side at least 8")

    @classmethod
    def from_dict(cls, data: Mapping, base: Path = Path(".")) -> "StudyManifest":
        """Build from manifest JSON; relative clip paths are taken from ``base`` (the manifest's folder)."""
        unknown = set(data) - {"name", "clips", "instructions", "variant_pairs", "params", "gold_pairs",
                               "max_frames", "short_side"}
        if unknown:
            raise ValueError(f"unknown manifest keys: {', '.join(sorted(unknown))}")
        fields = {k: data[k] for k in ("name", "gold_pairs", "max_frames", "short_side") if k in data}
        return cls(clips=tuple((base / c).resolve() for c in data.get("clips", [])),
                   instructions=tuple(data.get("instructions", [])),
                   variant_pairs=tuple(tuple(p) for p in data.get("variant_pairs", [])),
                   params=StudyParams(**data.get("params", {})), **fields)

    @classmethod
    def load(cls, path: str | Path) -> "StudyManifest":
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text()), path.resolve().parent)

    def to_json(self) -> dict:
        """The manifest as the store keeps it (resolved clip paths)."""
        out = asdict(self)
        out["clips"] = [str(c) for c in self.clips]
        out["instructions"] = list(self.instructions)
        out["variant_pairs"] = [list(p) for p in self.variant_pairs]
        return out

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(v for p in self.variant_pairs for v in p))


# ------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Render:
    """One edit of the study: a clip (with its hash), an instruction and a variant."""

    clip: Path
    clip_hash: str
    instruction: str
    variant: str

    def path(self, folder: Path, manifest: StudyManifest, model: str) -> Path:
        """Named by a hash of everything the output depends on, so a finished file can be trusted and reused."""
        key = hashlib.sha256(json.dumps([self.clip_hash, self.instruction, self.variant, asdict(manifest.params),
                                         manifest.max_frames, manifest.short_side, model]).encode()).hexdigest()
        return folder / f"{self.clip.stem}-{key[:16]}-{_slug(self.variant)}.mp4"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _publish(write: Callable[[Path], Any], path: Path) -> Any:
    """Write through a temporary file and rename it into place, so ``path`` exists only once complete; return
    what ``write`` returned."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    out = write(tmp)
    os.replace(tmp, path)
    return out


def render_edit(editor: Editor, render: Render, manifest: StudyManifest, path: Path,
                progress: Progress | None = None) -> dict:
    """Render one edit to ``path`` unless it is already there; return its timings (the engine's speed summary)."""
    if path.exists() and _sidecar(path).exists():
        return json.loads(_sidecar(path).read_text())
    request = manifest.params.request(render.instruction, render.variant)
    result = _publish(lambda tmp: editor.edit_video(render.clip, tmp, request, short_side=manifest.short_side,
                                                    max_frames=manifest.max_frames, progress=progress), path)
    timings = result.summary()
    _sidecar(path).write_text(json.dumps(timings))
    return timings


def broken_frames(frames: np.ndarray, seed: int) -> np.ndarray:
    """A plainly broken version of ``uint8 T H W 3`` frames for gold pairs: frames reversed, colours swapped,
    buried under coarse 8-pixel block noise (coarse, so H.264 does not smooth it away)."""
    rng = np.random.default_rng(seed)
    t, h, w, _ = frames.shape
    blocks = rng.integers(0, 256, (t, -(-h // 8), -(-w // 8), 3), dtype=np.uint8)
    noise = blocks.repeat(8, 1).repeat(8, 2)[:, :h, :w]
    return (0.2 * frames[::-1, :, :, ::-1] + 0.8 * noise).astype(np.uint8)


def render_broken(editor: Editor, render: Render, manifest: StudyManifest, path: Path, seed: int) -> None:
    """The broken side of a gold pair: the source clip, read as the engine reads it, then destroyed."""
    if path.exists():
        return
    clip = video_io.read_clip(render.clip, short_side=manifest.short_side, max_frames=manifest.max_frames,
                              multiple=editor.family.size_multiple)
    _publish(lambda tmp: video_io.write_clip(broken_frames(clip.frames, seed), clip.fps, tmp), path)


# ------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlannedPair:
    a: Render
    b: Render
    gold_bad_side: str | None = None  # 'A'/'B' for a gold pair


def plan_pairs(manifest: StudyManifest, clip_hashes: dict[Path, str]) -> list[PlannedPair]:
    """Every clip x instruction x variant pair, then ``gold_pairs`` gold pairs on distinct (clip, instruction).

    A gold pair shows the first variant of the first pair against the broken clip, on a side drawn at random
    (seeded by the study name, so a rerun plans the same study)."""
    def render(clip, instruction, variant):
        return Render(clip, clip_hashes[clip], instruction, variant)

    cells = [(c, i) for c in manifest.clips for i in manifest.instructions]
    pairs = [PlannedPair(render(c, i, a), render(c, i, b)) for c, i in cells for a, b in manifest.variant_pairs]
    rng = random.Random(manifest.name)
    good_variant = manifest.variant_pairs[0][0]
    for c, i in rng.sample(cells, manifest.gold_pairs):
        good, bad = render(c, i, good_variant), render(c, i, BROKEN_VARIANT)
        side = rng.choice("AB")
        pairs.append(PlannedPair(bad, good, "A") if side == "A" else PlannedPair(good, bad, "B"))
    return pairs


def check_variants(editor: Editor, manifest: StudyManifest) -> None:
    """Fail before rendering anything when the model family lacks a variant the study compares."""
    known = available_variants(editor.family)
    missing = [v for v in manifest.variants if v not in known]
    if missing:
        raise ValueError(f"variants not available with model {editor.family.name!r}: {', '.join(missing)} "
                         f"(available: {', '.join(known)})")


def render_all(editor: Editor, plan: list[PlannedPair], manifest: StudyManifest, folder: Path,
               progress: Progress | None = None) -> dict[Render, tuple[Path, dict | None]]:
    """Render every distinct edit of the plan once (a teacher edit shared by several pairs is rendered once),
    with a tqdm bar over edits that shows the sampler steps of the current one; returns each render's file and
    timings (``None`` for a broken side)."""
    renders = list(dict.fromkeys(r for p in plan for r in (p.a, p.b)))
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    bar = tqdm(renders, desc=f"study {manifest.name}", unit="edit")
    for k, r in enumerate(bar):
        bar.set_postfix_str(f"{r.clip.name} / {r.variant}")
        out[r] = _render_one(editor, r, manifest, r.path(folder, manifest, editor.family.name), _steps(bar, r))
        if progress is not None:
            progress(k + 1, len(renders))
    return out


def _steps(bar, render: Render) -> Progress:
    """Sampler progress of one edit, shown after the bar."""
    return lambda done, total: bar.set_postfix_str(f"{render.clip.name} / {render.variant} step {done}/{total}")


def _render_one(editor: Editor, render: Render, manifest: StudyManifest, path: Path,
                steps: Progress) -> tuple[Path, dict | None]:
    if render.variant == BROKEN_VARIANT:
        render_broken(editor, render, manifest, path, seed=int(render.clip_hash[:8], 16))
        return path, None
    return path, render_edit(editor, render, manifest, path, steps)


def store_rows(plan: list[PlannedPair], files: dict, manifest: StudyManifest) -> list[dict]:
    """The study pairs as :meth:`Store.add_study_pairs` takes them."""
    params = {**asdict(manifest.params), "max_frames": manifest.max_frames, "short_side": manifest.short_side}
    return [dict(clip_path=str(p.a.clip), clip_hash=p.a.clip_hash, instruction=p.a.instruction,
                 variant_a=p.a.variant, variant_b=p.b.variant, params=params,
                 rendered_a=str(files[p.a][0]), rendered_b=str(files[p.b][0]),
                 timings={"a": files[p.a][1], "b": files[p.b][1]},
                 is_gold=p.gold_bad_side is not None, gold_bad_side=p.gold_bad_side) for p in plan]


def create_study(store: Store, editor: Editor, manifest: StudyManifest, out: str | Path = DEFAULT_OUT,
                 progress: Progress | None = None) -> str:
    """Pre-render every pair of ``manifest`` under ``out/<name>/`` and record the study; return the study id.

    The same manifest a second time renders nothing new and returns the study already recorded."""
    check_variants(editor, manifest)
    plan = plan_pairs(manifest, {c: file_sha256(c) for c in manifest.clips})
    files = render_all(editor, plan, manifest, Path(out).resolve() / _slug(manifest.name), progress)
    recorded = manifest.to_json() | {"model": editor.family.name}
    for s in store.studies():
        if s["name"] == manifest.name and s["manifest"] == recorded:
            return s["id"]
    study_id = store.create_study(manifest.name, recorded)
    store.add_study_pairs(study_id, store_rows(plan, files, manifest))
    return study_id


# ------------------------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m editor.study", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="pre-render a study from a manifest and record it in the store")
    create.add_argument("--manifest", type=Path, required=True, help="study manifest (JSON)")
    create.add_argument("--out", type=Path, default=DEFAULT_OUT, help="rendered clips go under OUT/<name>/")
    create.add_argument("--model", default=None, help="model family (default: the embedded one)")
    sub.add_parser("list", help="the studies in the store, with their pair counts")
    for s in (create, sub.choices["list"]):
        s.add_argument("--db", default=None, help="SQLAlchemy URL (default: $DATABASE_URL or data/ratings.db)")
    return p.parse_args(argv)


def main(argv=None) -> str | None:
    a = parse_args(argv)
    with Store(a.db) as store:
        if a.command == "list":
            for s in store.studies():
                print(f"{s['id']}  {len(store.study_pairs(s['id'])):4d} pairs  {s['name']}")
            return None
        import torch
        from editor.loading import load_family

        manifest = StudyManifest.load(a.manifest)
        with torch.inference_mode():  # scoped: main() is also called in-process (tests), grad mode must survive
            study_id = create_study(store, Editor(load_family(a.model)), manifest, a.out)
        print(f"study {manifest.name!r}: {study_id} ({len(store.study_pairs(study_id))} pairs)")
        return study_id


if __name__ == "__main__":
    main()
