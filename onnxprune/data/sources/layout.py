"""Choosing the class root of an ImageFolder layout, in a directory or a tar (pure, on path parts)."""

from __future__ import annotations


from onnxprune.data.images import IMAGE_EXTENSIONS
from onnxprune.errors import DataError

__all__ = ["folder_layout", "skip_part"]


def skip_part(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def folder_layout(where: str, files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], split: str | None
                   ) -> tuple[tuple[str, ...], list[int], list[str] | None, list[int] | None]:
    """Choose the class root among image files (given as path parts).

    Returns (prefix, indices of the chosen files, classes or None, label per chosen file or None).
    Files directly in the root with no class folders give unlabelled data; files beside class
    folders are ignored (as torchvision's ImageFolder does).
    """
    if not files:
        raise DataError(f"{where}: no images ({'/'.join(IMAGE_EXTENSIONS)}) found")
    idx = list(range(len(files)))
    if split is not None:
        nested = [i for i in idx if split in files[i][:-2]]  # .../<split>/<class>/x.jpg
        flat = [i for i in idx if files[i][-2:-1] == (split,)]  # .../<split>/x.jpg
        if nested:
            idx = nested
        elif flat:
            parents = sorted({files[i][:-1] for i in flat})
            if len(parents) > 1:
                shown = ", ".join("/".join(q) for q in parents[:6])
                raise DataError(f"{where}: several folders named {split!r} hold images ({shown})")
            return parents[0], flat, None, None
        else:
            raise DataError(f"{where}: no folder named {split!r} holds images")
    parents = [files[i][:-1] for i in idx]
    if all(len(p) == 0 for p in parents):
        return (), idx, None, None
    labelled = [(i, p) for i, p in zip(idx, parents) if p]
    prefixes = sorted({p[:-1] for _, p in labelled})
    if split is not None and len(prefixes) > 1:
        ends = [q for q in prefixes if q and q[-1] == split]
        if ends:
            prefixes = ends
    if len(prefixes) > 1:
        shown = ", ".join("/".join(q) or "." for q in prefixes[:6])
        more = "" if len(prefixes) <= 6 else f" and {len(prefixes) - 6} more"
        raise DataError(f"{where}: class folders found under several roots ({shown}{more}); "
                        "pass split=NAME (--split) to choose one")
    prefix = prefixes[0]
    n = len(prefix)
    class_set = {p[n] for _, p in labelled if p[:-1] == prefix}
    class_set |= {d[n] for d in dirs if len(d) == n + 1 and d[:n] == prefix and not skip_part(d[n])}
    classes = sorted(class_set)
    lookup = {c: k for k, c in enumerate(classes)}
    chosen = [(i, lookup[p[n]]) for i, p in labelled if p[:-1] == prefix]
    return prefix, [i for i, _ in chosen], classes, [c for _, c in chosen]


