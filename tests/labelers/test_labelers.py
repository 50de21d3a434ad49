"""CLIPTopNLabeler / SigLIPTopNLabeler built from config dicts: labels, contract, fingerprint, bad input."""
import hashlib
import json

import open_clip
import pytest
import torch

from alignkit.labelers import BaseLabeler
from alignkit.towers.open_clip import forward_features
from alignkit.registry import LABELERS
from alignkit.structures import PairSet, PatchLabels
from alignkit.testing.hf_tiny import save_hf_tower, tiny_clip, tiny_siglip


def cfg(kind, tiny, word_list, cache_dir, **kw):
    name = tiny.VIT if kind == "CLIPTopNLabeler" else tiny.MAP
    # device pinned: the references below run on CPU (test_cuda.py covers the GPU)
    return dict(type=kind, model_name=name, pretrained=tiny.weights[name], word_list=word_list,
                cache_dir=str(cache_dir), device="cpu", **kw)


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    """One labeler of each kind (top_n=5, min_score=-inf so every slot is kept)."""
    root = tmp_path_factory.mktemp("labelers")
    words = root / "words.txt"
    words.write_text("\n".join(tiny.words), encoding="utf-8")
    built = {
        kind: LABELERS.build(cfg(kind, tiny, str(words), root / "banks", top_n=5, min_score=float("-inf")))
        for kind in ("CLIPTopNLabeler", "SigLIPTopNLabeler")
    }
    # The transformers labelers on tiny CLIPModel / SiglipModel folders of the same geometry (4x4 grid, 32 px).
    for kind, model in (("HFCLIPTopNLabeler", tiny_clip(seed=0)), ("HFSigLIPTopNLabeler", tiny_siglip(seed=0))):
        folder = save_hf_tower(model, root / kind)
        built[kind] = LABELERS.build(dict(type=kind, model_name=folder, word_list=str(words), top_n=5,
                                          min_score=float("-inf"), cache_dir=str(root / "banks"), device="cpu"))
    # S²'s labeler around the open_clip CLIP one; with the base scale alone its images are the tower's (32 px).
    built["MultiScaleLabeler"] = LABELERS.build(dict(
        type="MultiScaleLabeler", scales=(32,),
        labeler=cfg("CLIPTopNLabeler", tiny, str(words), root / "banks", top_n=5, min_score=float("-inf"))))
    return built


def text_reference(lab, words) -> torch.Tensor:
    """Each backend's own text tower on every word at full context length, in one batch."""
    if lab.backend == "open_clip":
        return lab.model.encode_text(lab.tokenizer(list(words)))
    length = lab.text_model.config.text_config.max_position_embeddings
    enc = lab.tokenizer(list(words), padding="max_length", max_length=length, return_tensors="pt")
    out = lab.text_model.get_text_features(input_ids=enc["input_ids"])
    return out if isinstance(out, torch.Tensor) else out.pooler_output


LABELERS.import_from_location()
KINDS = sorted(LABELERS.module_dict)


def test_registry_lists_both():
    assert {"CLIPTopNLabeler", "SigLIPTopNLabeler", "HFCLIPTopNLabeler", "HFSigLIPTopNLabeler"} <= set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_contract(built, tiny, kind):
    lab = built[kind]
    assert isinstance(lab, BaseLabeler)
    assert lab.grid == (4, 4) and lab.num_words == 20 and lab.words == tuple(tiny.words)
    images = tiny.images(2, 32)
    dense = lab.encode_patches(images)
    assert dense.shape == (2, 16, lab.bank.shape[1])
    labels = lab(images)
    assert isinstance(labels, PatchLabels) and labels.words.shape == (2, 16, 5) and labels.grid == (4, 4)
    labels.check(num_words=lab.num_words)
    assert bool((labels.scores[..., :-1] >= labels.scores[..., 1:]).all())
    assert len(PairSet.from_labels(labels)) == 2 * 16 * 5  # min_score=-inf keeps every slot


@pytest.mark.parametrize("kind", KINDS)
def test_labels_equal_brute_force_reference(built, tiny, kind):
    lab = built[kind]
    images = tiny.images(2, 32, seed=3)
    dense = lab.encode_patches(images).double()
    # reference: the text tower run here on every word, full context, then a full sort
    text = text_reference(lab, tiny.words).double()
    sims = torch.nn.functional.normalize(dense, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).t()
    if lab.negate:
        sims = -sims
    ref_s, ref_i = sims.sort(dim=-1, descending=True, stable=True)
    labels = lab(images)
    torch.testing.assert_close(labels.scores.double(), ref_s[..., :5], atol=1e-5, rtol=0)
    torch.testing.assert_close(sims.gather(-1, labels.words), ref_s[..., :5], atol=1e-5, rtol=0)


def test_negation_and_min_score_follow_eq6(tiny, word_file, tmp_path):
    plain = LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path, top_n=20, negate=False,
                               min_score=float("-inf")))
    paper = LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path, top_n=20))  # negate=True, min 0
    assert paper.negate and paper.min_score == 0.0 and not plain.negate
    dense = plain.encode_patches(tiny.images(1, 32))
    cos = plain.label(dense)  # every word, by cosine
    neg = paper.label(dense)
    # Eq. 6: the top word is the one with the *lowest* cosine, and its score is -cos
    cos_by_word = torch.zeros(1, 16, 20).scatter_(-1, cos.words, cos.scores)
    kept = neg.words >= 0
    torch.testing.assert_close(neg.scores[kept], -cos_by_word.gather(-1, neg.words.clamp(min=0))[kept])
    top = kept[..., 0]
    assert bool(top.any()) and bool((~top).any())  # this seed exercises both cases
    assert torch.equal(neg.words[..., 0][top], cos.words[..., -1][top])
    # min_score 0 drops exactly the words with cos >= 0 (-cos <= 0)
    assert torch.equal(kept.sum(-1), (cos.scores < 0).sum(-1))
    assert bool((neg.scores[~kept] == 0).all())


def test_label_from_an_mllm_forward(built, tiny):
    """Dense embeddings from the caller's own tower forward give the same labels as labeler(images)."""
    lab = built["CLIPTopNLabeler"]
    images = tiny.images(2, 32, seed=5)
    feats, dense = forward_features(lab.visual, images, feature_layers=(-2,))
    assert feats[-2].shape == (2, 16, 64)
    a, b = lab.label(dense), lab(images)
    assert torch.equal(a.words, b.words) and torch.equal(a.scores, b.scores)


def test_chunk_size_and_bf16_search_agree(tiny, word_file, tmp_path):
    base = LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path, top_n=5))
    small = LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path, top_n=5, chunk_size=3))
    half = LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path, top_n=5, topn_dtype="bfloat16"))
    dense = base.encode_patches(tiny.images(2, 32))
    a, b, c = base.label(dense), small.label(dense), half.label(dense)
    assert torch.equal(a.words, b.words)
    torch.testing.assert_close(a.scores, b.scores)
    assert (a.words == c.words).float().mean() > 0.9  # bf16 nominates, fp32 rescores
    torch.testing.assert_close(a.scores[a.words == c.words], c.scores[a.words == c.words])


def test_fingerprint(built, tiny):
    fp = built["CLIPTopNLabeler"].fingerprint()
    assert json.loads(json.dumps(fp)) == fp
    with open(tiny.weights[tiny.VIT], "rb") as f:
        assert fp["weights_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert fp["word_list_sha256"] == hashlib.sha256("\n".join(tiny.words).encode()).hexdigest()
    assert fp["num_words"] == 20 and fp["top_n"] == 5 and fp["negate"] is True and fp["dense_mode"] == "proj"
    assert fp["image_size"] == [32, 32] and fp["grid"] == [4, 4]
    assert set(fp["transform"]) >= {"size", "mean", "std", "interpolation", "resize_mode"}
    sig = built["SigLIPTopNLabeler"].fingerprint()
    assert sig["dense_mode"] == "attn_pool_value" and sig["negate"] is False


def test_transform_preprocesses_to_the_encoder_size(built):
    from PIL import Image

    lab = built["CLIPTopNLabeler"]
    img = Image.new("RGB", (50, 70), color=(200, 10, 30))
    x = lab.transform(img)
    assert tuple(x.shape) == (3, 32, 32)
    assert lab(x.unsqueeze(0)).words.shape == (1, 16, 5)


def test_local_dir_weights(tiny, word_file, tmp_path):
    folder = tmp_path / "tiny_dir"
    folder.mkdir()
    config = dict(model_cfg=open_clip.get_model_config(tiny.VIT), preprocess_cfg={})
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    (folder / "open_clip_pytorch_model.bin").write_bytes(open(tiny.weights[tiny.VIT], "rb").read())
    lab = LABELERS.build(dict(type="CLIPTopNLabeler", model_name=f"local-dir:{folder}", word_list=word_file,
                              cache_dir=str(tmp_path / "banks"), top_n=3, device="cpu"))
    ref = LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path / "banks", top_n=3))
    assert lab.fingerprint()["weights_kind"] == "local-dir"
    torch.testing.assert_close(lab.bank, ref.bank)


# --------------------------------------------------------------------------- bad input
def test_unknown_model_name(tiny, word_file, tmp_path):
    with pytest.raises(ValueError, match=r"model_name 'ViT-Q-99' is not an open_clip model"):
        LABELERS.build(dict(type="CLIPTopNLabeler", model_name="ViT-Q-99", word_list=word_file,
                            cache_dir=str(tmp_path), device="cpu"))


def test_unreadable_weights_file(tiny, word_file, tmp_path):
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(b"\x00\x01 these are not weights")
    with pytest.raises(ValueError, match=r"pretrained=.*garbage.bin.* could not be"):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path) | dict(pretrained=str(bad)))


def test_weights_of_another_model(tiny, word_file, tmp_path):
    with pytest.raises(ValueError, match=r"could not be loaded as open_clip weights for 'alignkit-tiny-vit'"):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path) | dict(pretrained=tiny.weights[tiny.MAP]))


def test_missing_weights_file_and_unknown_tag(tiny, word_file, tmp_path):
    with pytest.raises(ValueError, match=r"pretrained='/no/such/file.bin': no such weights file"):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path) | dict(pretrained="/no/such/file.bin"))
    with pytest.raises(ValueError, match=r"pretrained='laion9b' is neither a weights file nor an open_clip tag"):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path) | dict(pretrained="laion9b"))


def test_empty_and_all_duplicate_word_lists(tiny, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty.txt is empty"):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, str(empty), tmp_path))
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ncat\n")
    with pytest.raises(ValueError, match=r"dup.txt has only 1 distinct word, 'cat'"):
        LABELERS.build(cfg("SigLIPTopNLabeler", tiny, str(dup), tmp_path))


def test_non_utf8_word_list(tiny, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"cat\nna\xefve\n")
    with pytest.raises(ValueError, match=r"latin1.txt: line 2 is not valid UTF-8"):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, str(bad), tmp_path))


def test_top_n_larger_than_the_word_list(tiny, word_file, tmp_path):
    with pytest.raises(ValueError, match=r"top_n=21 is larger than the word list \(20 words.*expected top_n <= 20"):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path, top_n=21))


@pytest.mark.parametrize("bad, match", [
    (dict(top_n=0), r"top_n must be an int >= 1, got 0"),
    (dict(min_score=float("nan")), r"min_score must be a number"),
    (dict(prompt="a photo"), r"prompt must be a str with exactly one '\{\}'"),
    (dict(dense_mode="cls"), r"dense_mode 'cls' is not one of"),
    (dict(chunk_size=0), r"chunk_size must be an int >= 1, got 0"),
    (dict(topn_dtype="int8"), r"topn_dtype must be None or one of"),
    (dict(negate="yes"), r"negate must be True or False"),
    (dict(precision="fp8"), r"precision 'fp8' is not one of"),
])
def test_bad_options(tiny, word_file, tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        LABELERS.build(cfg("CLIPTopNLabeler", tiny, word_file, tmp_path, **bad))


def test_siglip_labeler_on_a_clip_model(tiny, word_file, tmp_path):
    with pytest.raises(ValueError, match=r"dense_mode='attn_pool_value' needs an open_clip TimmModel"):
        LABELERS.build(cfg("SigLIPTopNLabeler", tiny, word_file, tmp_path) | dict(
            model_name=tiny.VIT, pretrained=tiny.weights[tiny.VIT]))


@pytest.mark.parametrize("kind", KINDS)
def test_images_of_the_wrong_size(built, kind):
    with pytest.raises(ValueError, match=r"images are 64x64 pixels but the encoder expects 32x32"):
        built[kind](torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize("kind", KINDS)
def test_dense_of_the_wrong_shape(built, kind):
    lab = built[kind]
    c = lab.bank.shape[1]
    with pytest.raises(ValueError, match=r"expected \(B, P=16, C=%d\)" % c):
        lab.label(torch.zeros(1, 15, c))
    with pytest.raises(ValueError, match=r"expected \(B, P=16, C=%d\)" % c):
        lab.label(torch.zeros(1, 16, c + 1))
