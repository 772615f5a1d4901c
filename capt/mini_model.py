"""The embedded mini CLIP: a word-level tokenizer, the model config, and the committed checkpoint.

The mini CLIP is a standard ``open_clip.model.CLIP`` (ViT image tower, causal text transformer with
argmax-EOT pooling) small enough to pretrain on two CPU cores on the procedural mini world
(:mod:`capt.data.miniworld`). Everything downstream treats it like any other open_clip ViT.

``load_mini()`` reads ``capt/assets/mini_clip.pt``, which ``data_scripts/pretrain_mini.py`` writes.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Iterable, Sequence

import torch

ASSET_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_CHECKPOINT = ASSET_DIR / "mini_clip.pt"
DEFAULT_REPORT = ASSET_DIR / "mini_clip.json"
REGENERATE_COMMAND = "python data_scripts/pretrain_mini.py"

PAD, SOT, UNK, EOT = "<pad>", "<sot>", "<unk>", "<eot>"
PLACEHOLDER = "X"  # the word prompt learners put where learned context vectors go
CONTEXT_LENGTH = 24

# Normalisation inside the model: CLIP's own constants, so the mini model sits behind the same wrapper.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

# Small enough that attacking it is cheap (the book evaluates every test image under AutoAttack-grade
# attacks on two CPU cores: ~5,000 image forward+backward passes per second at batch 512 with 2
# threads), with three layers in each tower so deep prompts (depth 3) reach every layer.
MODEL_CONFIG = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 3, "width": 64, "head_width": 32,
                   "mlp_ratio": 4.0},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "width": 64, "heads": 2, "layers": 3,
                 "mlp_ratio": 4.0},
}


def tower_config(layers: int | None = None, width: int | None = None, patch: int | None = None,
                 head_width: int | None = None) -> dict:
    """:data:`MODEL_CONFIG` with both towers' depth and/or width changed (heads of 32 dimensions), the image
    tower's patch size (``(32 / patch)**2`` image tokens) and attention-head width (``width / head_width``
    heads, the text tower's heads alike): the pretraining script's ``--layers``/``--width``/``--patch``/
    ``--head-width``, for trying other towers (benchmarks/mini_v4_probe.md)."""
    cfg = copy.deepcopy(MODEL_CONFIG)
    for tower in ("vision_cfg", "text_cfg"):
        if layers is not None:
            cfg[tower]["layers"] = int(layers)
        if width is not None:
            cfg[tower]["width"] = int(width)
    if width is not None:
        cfg["text_cfg"]["heads"] = max(2, int(width) // 32)
    if patch is not None:
        size = cfg["vision_cfg"]["image_size"]
        if patch < 1 or size % patch:
            raise ValueError(f"patch size {patch} must divide the image size {size} (e.g. 4, 8 or 16)")
        cfg["vision_cfg"]["patch_size"] = int(patch)
    if head_width is not None:
        for tower in ("vision_cfg", "text_cfg"):
            w = cfg[tower]["width"]
            if head_width < 1 or w % head_width:
                raise ValueError(f"head width {head_width} must divide the tower width {w} (e.g. 8, 16 or 32)")
        cfg["vision_cfg"]["head_width"] = int(head_width)
        cfg["text_cfg"]["heads"] = cfg["text_cfg"]["width"] // int(head_width)
    return cfg


_TOKEN_RE = re.compile(r"[A-Za-z]+|[.,]|[^\sA-Za-z.,]+")


def default_vocab() -> list[str]:
    """``[<pad>, <sot>, <unk>, '.', ',', 'X', words of the mini world..., <eot>]`` (EOT has the highest id)."""
    from capt.data.miniworld import vocabulary_words

    words = [w for w in vocabulary_words() if w not in (PLACEHOLDER.lower(),)]
    return [PAD, SOT, UNK, ".", ",", PLACEHOLDER] + words + [EOT]


class UnknownWordsError(ValueError):
    """A text with words the mini CLIP's vocabulary lacks; the message names them and the fix."""


class MiniTokenizer:
    """Word-level tokenizer: one token per word or punctuation mark, lower-cased (except ``X``).

    ``tokenizer(texts, context_length=None) -> LongTensor (N, context_length)``: ``SOT w1 ... wk EOT``
    then zero padding, like open_clip's tokenizer (too long texts are cut and end in EOT). A word
    outside the vocabulary is an error naming it (mapping it to ``<unk>`` would give two class names
    such as "sneaker" and "ankle boot" the same text features). The EOT id is the largest id, so
    open_clip's argmax pooling finds it.
    """

    def __init__(self, vocab: Sequence[str] | None = None, context_length: int = CONTEXT_LENGTH):
        vocab = list(default_vocab() if vocab is None else vocab)
        if vocab[:3] != [PAD, SOT, UNK] or vocab[-1] != EOT:
            raise ValueError(f"a mini vocabulary starts with {PAD}, {SOT}, {UNK} and ends with {EOT}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("the mini vocabulary has duplicate words")
        self.vocab = vocab
        self.context_length = int(context_length)
        self.index = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.sot_id, self.unk_id, self.eot_id = 0, 1, 2, len(vocab) - 1

    def __len__(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        """Split one text into words and punctuation (``X`` keeps its case; other words are lowered)."""
        return [w if w == PLACEHOLDER else w.lower() for w in _TOKEN_RE.findall(text)]

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without SOT/EOT; a word the vocabulary lacks is an error."""
        self.check([text])
        return [self.index[w] for w in self.words(text)]

    def check(self, texts: Sequence[str]) -> None:
        """Fail naming every word of ``texts`` the vocabulary lacks, and the fix."""
        unknown = {}
        for text in texts:
            for w in self.words(text):
                if w not in self.index:
                    unknown.setdefault(w, text)
        if unknown:
            first = next(iter(unknown.values()))
            raise UnknownWordsError(
                f"the mini CLIP cannot read {', '.join(map(repr, unknown))} (e.g. in {first!r}): it knows only the "
                f"{len(self.vocab)} tokens of the mini world (capt.mini_model.default_vocab()). Use class names and "
                "templates in those words, or a real CLIP: model='ViT-B-32', pretrained='openai' (or a local "
                "weights file)")

    def decode(self, ids: Iterable[int]) -> str:
        words = [self.vocab[int(i)] for i in ids if int(i) not in (self.pad_id, self.sot_id, self.eot_id)]
        return " ".join(words).replace(" .", ".").replace(" ,", ",")

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.LongTensor:
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else int(context_length)
        if length < 2:
            raise ValueError("context_length must leave room for SOT and EOT")
        self.check(texts)
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text)[: length - 2] + [self.eot_id]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def __repr__(self) -> str:
        return f"MiniTokenizer(vocab={len(self.vocab)} words, context_length={self.context_length})"


def build_mini(config: dict | None = None, vocab_size: int | None = None):
    """A freshly initialised mini ``open_clip.model.CLIP`` (float32) from a plain-dict config."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = copy.deepcopy(MODEL_CONFIG if config is None else config)
    text_cfg = dict(cfg["text_cfg"])
    if vocab_size is not None:
        text_cfg["vocab_size"] = int(vocab_size)
    if "vocab_size" not in text_cfg:
        text_cfg["vocab_size"] = len(default_vocab())
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
                text_cfg=CLIPTextCfg(**text_cfg), quick_gelu=cfg["quick_gelu"])


class MiniCheckpointError(RuntimeError):
    """The mini CLIP checkpoint is missing or unreadable; the message says how to regenerate it."""


def _fail(path: Path, why: str) -> MiniCheckpointError:
    return MiniCheckpointError(
        f"cannot load the mini CLIP checkpoint {path}: {why}. Regenerate it with "
        f"`{REGENERATE_COMMAND}` (from the repository root), or restore it with "
        f"`git checkout -- capt/assets/mini_clip.pt`."
    )


def load_mini(path: str | Path | None = None) -> dict:
    """Load the pretrained mini CLIP.

    Returns ``dict(model=<open_clip CLIP, eval mode, float32>, tokenizer=<MiniTokenizer>,
    image_size=32, mean=(...), std=(...), config=<the checkpoint's config>)``; the model expects inputs normalised with mean/std.
    """
    path = DEFAULT_CHECKPOINT if path is None else Path(path)
    if not path.is_file():
        raise _fail(path, "file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        config, vocab, state = blob["config"], list(blob["vocab"]), blob["state_dict"]
        mean, std = tuple(float(v) for v in blob["mean"]), tuple(float(v) for v in blob["std"])
        tokenizer = MiniTokenizer(vocab, context_length=config["text_cfg"]["context_length"])
        model = build_mini(config, vocab_size=len(vocab))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except MiniCheckpointError:
        raise
    except Exception as exc:  # corrupt zip, missing key, shape mismatch: all mean "bad file"
        raise _fail(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None
    model = model.float().eval()
    return dict(model=model, tokenizer=tokenizer, image_size=int(config["vision_cfg"]["image_size"]),
                mean=mean, std=std, config=config)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def competence_table(card: dict | None = None):
    """The committed card's competence checks (``data_scripts/pretrain_mini.py``), each beside what was
    measured, as a DataFrame: check, measured, holds. Robust figures are the headline ``aa`` attack's."""
    import json

    import numpy as np
    import pandas as pd

    card = card or json.loads(DEFAULT_REPORT.read_text())
    r = card["report"]
    z = r["zero_shot"]

    def pct(v):
        return f"{100 * v:.1f} %"

    targets = {k: v["acc"] for k, v in z.items() if v["role"] == "target"}
    shifts = {k: v["acc"] for k, v in z.items() if v["role"] == "shift"}
    c, strong = r["source_train_confidence"], r.get("aa_book_eps", {}).get("acc", {})
    measured = {
        "source clean 55-75%": pct(z["mini_source"]["acc"]),
        "targets mean clean 50-80%": pct(np.mean(list(targets.values()))),
        "no target >= 95%": f"highest {max(targets, key=targets.get)} {pct(max(targets.values()))}",
        "shifts below source, >= 2x chance": ", ".join(pct(v) for v in shifts.values()),
        "confidence std >= 0.2": f"{c['std']:.3f}",
        "confidence < 0.5 on >= 25%": pct(c["below_0.5"]),
        "16-shot overlap < 15%": pct(r["few_shot_overlap"]["max"]),
        "source robust <= 5% at book eps": pct(strong["mini_source"]) if strong else "–",
        "targets mean robust <= 10%": pct(np.mean([strong[k] for k in targets])) if strong else "–",
    }
    return pd.DataFrame({"check": list(r["checks"]), "measured": [measured.get(k, "–") for k in r["checks"]],
                         "holds": ["yes" if v else "NO" for v in r["checks"].values()]})
