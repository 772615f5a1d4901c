"""Users' image folders, written with PIL as a user would bring them: PNG and JPEG, odd sizes,
greyscale, palette and CMYK images, class folders named in the mini CLIP's words (so its tokenizer
reads them). The book page "Your own data" runs its worked example on folders made by :func:`write_tree`.
"""

from __future__ import annotations

from pathlib import Path

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60)}
# (file suffix, PIL mode, size): every kind of file a camera or a download folder holds
KINDS = [(".png", "RGB", (37, 29)), (".jpg", "RGB", (48, 33)), (".png", "L", (31, 45)),
         (".jpeg", "CMYK", (40, 40)), (".png", "P", (29, 51)), (".JPG", "RGB", (64, 23))]


def write_image(path: Path, shape: str, colour: tuple, index: int) -> Path:
    """One picture of ``shape`` in ``colour`` on a dark ground, in the ``index``-th file kind."""
    from PIL import Image, ImageDraw

    suffix, mode, (w, h) = KINDS[index % len(KINDS)]
    im = Image.new("RGB", (w, h), (20 + 7 * index % 30, 20, 30))
    draw = ImageDraw.Draw(im)
    box = (w // 5 + index % 3, h // 5, 4 * w // 5, 4 * h // 5 - index % 2)
    {"circle": draw.ellipse, "square": draw.rectangle}.get(shape, draw.ellipse)(box, fill=colour)
    if shape == "star":
        draw.polygon([(w // 2, h // 8), (w // 3, 7 * h // 8), (7 * w // 8, h // 3), (w // 8, h // 3),
                      (2 * w // 3, 7 * h // 8)], fill=colour)
    im = im.convert(mode) if mode != "P" else im.convert("P", palette=Image.ADAPTIVE)
    path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90) if suffix.lower() in (".jpg", ".jpeg") else im.save(path)
    return path


def write_classes(root: Path, classes: dict[str, str], per_class: int, start: int = 0) -> Path:
    """``root/<folder>/img_<i>.<ext>`` for each class folder -> shape; colours cycle per image."""
    palette = list(COLOURS.values())
    for c, (folder, shape) in enumerate(classes.items()):
        for i in range(per_class):
            write_image(root / folder / f"img_{i:03d}", shape, palette[(i + c) % len(palette)], start + i + c)
    return root


def write_tree(root: Path, layout: str = "flat", per_class: int = 6,
               classes: dict[str, str] | None = None) -> Path:
    """A user's folder: ``flat`` (class folders; capt splits them) or ``subtrees`` (train/ val/ test/)."""
    classes = classes or {"circle": "circle", "square": "square", "star": "star"}
    if layout == "flat":
        return write_classes(root, classes, per_class)
    for k, split in enumerate(("train", "val", "test")):
        write_classes(root / split, classes, per_class if split != "val" else 1, start=10 * k)
    return root
