"""What docs/components.md and docs/extending.md promise a newcomer, checked."""
from __future__ import annotations

import open_clip
import pytest
import torch

import alignkit.labelers as labelers
from alignkit.labelers import cosine_topn, load_or_build_bank
from alignkit.losses import InfoNCELoss
from alignkit.models import SEAAligner
from alignkit.samplers import DedupSampler, WindowSampler
from alignkit.structures import PatchLabels
from alignkit.testing import byte_level_bpe_tokenizer
from alignkit.testing.hf_tiny import tiny_clip, tiny_siglip
from alignkit.towers.grid import patch_grid


def test_patch_grid_for_both_backends():
    # transformers: image size // patch size of the vision config (32 // 8 and 48 // 16)
    assert patch_grid(tiny_clip(image_size=32, patch_size=8)) == (4, 4)
    siglip = tiny_siglip(image_size=48, patch_size=16)
    assert patch_grid(siglip) == patch_grid(siglip.vision_model) == (3, 3)
    # open_clip: the ViT-B/16 config at 224 px -> 14 x 14, built on the meta device (no weights)
    with torch.device("meta"):
        model = open_clip.create_model("ViT-B-16", pretrained=None, device="meta")
    assert patch_grid(model) == patch_grid(model.visual) == (14, 14)
    with pytest.raises(ValueError, match="no patch grid for Linear"):
        patch_grid(torch.nn.Linear(2, 2))


def test_cosine_topn_returns_scores_then_ids_and_feeds_patch_labels():
    bank = torch.eye(3)  # word j = axis j
    dense = torch.tensor([[[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]]])  # (B=1, P=2, C=3)
    scores, ids = cosine_topn(dense, bank, k=2, min_score=0.0)
    # patch 0: cosines (0, 2/sqrt 5, 1/sqrt 5) -> words 1 then 2; patch 1: only word 0 is > 0
    assert ids.tolist() == [[[1, 2], [0, -1]]]
    torch.testing.assert_close(scores, torch.tensor([[[2 / 5 ** 0.5, 1 / 5 ** 0.5], [1.0, 0.0]]]))
    labels = PatchLabels(words=ids, scores=scores, grid=(1, 2))
    assert labels.top_n == 2


def test_load_or_build_bank_is_exported_and_caches(tmp_path):
    assert "load_or_build_bank" in labelers.__all__
    calls = []

    def build():
        calls.append(1)
        return torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)

    a, info = load_or_build_bank({"my": "bank"}, build, cache_dir=tmp_path, num_words=4)
    b, info2 = load_or_build_bank({"my": "bank"}, build, cache_dir=tmp_path, num_words=4)
    assert calls == [1] and info["built"] and not info2["built"] and torch.equal(a, b)


def test_sea_aligner_takes_instances_and_needs_words_without_a_labeler():
    tokenizer = byte_level_bpe_tokenizer()
    embedding = torch.nn.Embedding(len(tokenizer), 16)
    with pytest.raises(ValueError, match=r"without a labeler pass words=\[...\]"):
        SEAAligner(samplers=[WindowSampler(window=2)], loss=InfoNCELoss()).build_word_table(tokenizer, embedding)
    aligner = SEAAligner(samplers=[WindowSampler(window=2), dict(type="DedupSampler")], loss=InfoNCELoss(),
                         words=["cat", "dog", "tree"])
    assert isinstance(aligner.sampler.samplers[1], DedupSampler) and isinstance(aligner.loss, InfoNCELoss)
    aligner.build_word_table(tokenizer, embedding)
    labels = PatchLabels(words=torch.tensor([[[0], [1], [2], [0]]]), scores=torch.ones(1, 4, 1), grid=(2, 2))
    out = aligner(torch.randn(1, 4, 16, requires_grad=True), labels=labels)
    assert out["loss_align"].requires_grad and out["align_pairs_after_window"] == 1
