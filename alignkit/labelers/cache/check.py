"""Is a label cache right for the model (and the images) it is about to feed?

A cache is a file someone made earlier, perhaps with another word list, top-n,
grid, labeler or image transform. Its word ids index the model's word table and
its patch indices refer to the pixels the dataset produces, so any of those
differing trains on wrong targets without an error (or dies in the aligner with
an ``IndexError`` when the cache's V is larger). ``check_label_cache`` compares
the cache's manifest with everything that is known about the consumer and
raises ``LabelCacheError`` naming every differing field with both values.

What is compared:

- ``labeler.<field>``: with a labeler instance, its whole ``fingerprint()``
  (backend, model, weights, word list, prompt, top-n, grid, transform, ...).
  Without one (labels only from the cache), the word list the model trains
  with: ``labeler.word_list_sha256`` (sha256 of the words joined by newlines,
  as ``WordList.sha256``) and ``labeler.num_words``.
- ``layout.num_words`` / ``layout.grid`` / ``layout.top_n``: V of the model's
  word table, the grid of the model's vision encoder (P must be the encoder's
  patch count) and a required K, when given.
- ``transform.<key>``: the image transform the cache was made with against the
  dataset's ``image_processor`` (size, mean, std, resize mode, interpolation,
  padding to a square): a patch index means a different region of the photo
  under another transform.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

from alignkit.labelers.cache.format import LabelCacheError, diff_fields, transform_spec


def words_sha256(words: Sequence[str]) -> str:
    """sha256 of a word list as ``WordList.sha256`` computes it (the words joined by newlines)."""
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def label_cache_mismatches(
    cache,
    *,
    labeler=None,
    words: Sequence[str] | None = None,
    grid: Sequence[int] | None = None,
    top_n: int | None = None,
    image_processor=None,
) -> list[tuple[str, Any, Any, str]]:
    """``[(field, cache value, consumer value, who has it)]`` for every field where the cache differs.

    ``cache`` is a ``LabelCache`` (anything with ``manifest`` and ``root``);
    the keyword arguments are what the consumer knows (see the module docstring).
    """
    manifest = cache.manifest
    recorded = manifest["labeler"]
    layout = manifest["layout"]
    out: list[tuple[str, Any, Any, str]] = []
    if labeler is not None:
        out += [(f"labeler.{f}", a, b, "model's labeler has") for f, a, b in diff_fields(recorded, labeler.fingerprint())]
    if words is not None:
        words = list(words)
        mine = {"word_list_sha256": words_sha256(words), "num_words": len(words)}
        theirs = {k: recorded.get(k) for k in mine}
        out += [(f"labeler.{f}", a, b, "model's word list has") for f, a, b in diff_fields(theirs, mine)]
        if layout["num_words"] != len(words):
            out.append(("layout.num_words", layout["num_words"], len(words), "model's word table has"))
    if grid is not None and list(layout["grid"]) != [int(g) for g in grid]:
        out.append(("layout.grid", list(layout["grid"]), [int(g) for g in grid], "model's vision encoder has"))
    if top_n is not None and layout["top_n"] != top_n:
        out.append(("layout.top_n", layout["top_n"], top_n, "model has"))
    if image_processor is not None:
        describe = getattr(image_processor, "fingerprint", None)
        if not callable(describe):
            raise LabelCacheError(
                f"label cache {cache.root}: the dataset's image_processor {type(image_processor).__name__} has no "
                "fingerprint(), so the transform the labels were made with cannot be checked against it; give it "
                f"a fingerprint() returning {{image_size, mean, std, resize_mode, interpolation, pad_to_square}}"
            )
        made = transform_spec(recorded.get("transform", {}))
        used = transform_spec(describe())
        out += [(f"transform.{f}", a, b, "dataset's image_processor has") for f, a, b in diff_fields(made, used)]
    # One entry per field: the labeler's own fingerprint already names its word list.
    seen: set[str] = set()
    return [d for d in out if not (d[0] in seen or seen.add(d[0]))]


def check_label_cache(cache, *, what: str = "the model", **consumer) -> None:
    """``LabelCacheError`` naming every field where ``cache`` differs from its consumer.

    ``consumer``: the keyword arguments of :func:`label_cache_mismatches`;
    ``what`` names the consumer in the message (e.g. ``"the model and train_dataloader.dataset"``).
    """
    diffs = label_cache_mismatches(cache, **consumer)
    if diffs:
        detail = "; ".join(f"{field}: cache has {a!r}, {who} {b!r}" for field, a, b, who in diffs)
        raise LabelCacheError(
            f"label cache {cache.root} does not match {what}, refusing to use its labels. Differing field(s): "
            f"{detail}. Rebuild the cache with tools/extract_labels.py and the model's labeler config, "
            "or point label_cache at one made for this model."
        )
