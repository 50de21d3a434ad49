"""forward_features: dense embeddings and adapter features against references computed here."""
import open_clip
import pytest
import torch

from alignkit.towers.open_clip import DENSE_MODES, forward_features


@pytest.fixture(scope="module")
def vit64(tiny):
    return open_clip.create_model(tiny.VIT, pretrained=tiny.weights[tiny.VIT]).double().eval()


@pytest.fixture(scope="module")
def map64(tiny):
    return open_clip.create_model(tiny.MAP, pretrained=tiny.weights[tiny.MAP]).double().eval()


def vit_reference(visual, images):
    """The open_clip ViT written out: patchify, prepend CLS, blocks; returns every block output."""
    x = visual.conv1(images)  # (B, D, h, w)
    x = x.flatten(2).transpose(1, 2)  # (B, P, D)
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    outs = []
    for block in visual.transformer.resblocks:
        x = block(x)
        outs.append(x)
    return outs  # each (B, 1 + P, D), token 0 = CLS


def test_clip_proj_dense_equals_ln_post_proj_of_each_token(vit64, tiny):
    visual = vit64.visual
    images = tiny.images(3, 32).double()
    feats, dense = forward_features(visual, images, feature_layers=(-2, 0, -1), dense_mode="proj")
    outs = vit_reference(visual, images)
    patches = outs[-1][:, 1:]  # the tower has a class token (class_embedding): drop exactly it
    expect = torch.stack([visual.ln_post(patches[:, p]) @ visual.proj for p in range(patches.shape[1])], dim=1)
    assert dense.shape == (3, 16, 32)
    torch.testing.assert_close(dense, expect, atol=1e-10, rtol=0)
    # adapter features: block outputs without the CLS token, keyed by the index asked for
    assert sorted(feats) == [-2, -1, 0]
    torch.testing.assert_close(feats[-2], outs[-2][:, 1:], atol=1e-10, rtol=0)
    torch.testing.assert_close(feats[0], outs[0][:, 1:], atol=1e-10, rtol=0)
    torch.testing.assert_close(feats[-1], outs[-1][:, 1:], atol=1e-10, rtol=0)
    # the pooled image embedding is the CLS token through the same path
    torch.testing.assert_close(vit64.encode_image(images), visual.ln_post(outs[-1][:, 0]) @ visual.proj,
                               atol=1e-10, rtol=0)


def test_siglip_one_token_reproduces_encode_image(tiny):
    model = open_clip.create_model(tiny.MAP_1TOK, pretrained=tiny.weights[tiny.MAP_1TOK]).double().eval()
    images = tiny.images(4, 8).double()
    _, dense = forward_features(model.visual, images, feature_layers=())
    assert dense.shape == (4, 1, 64)
    torch.testing.assert_close(dense[:, 0], model.encode_image(images), atol=1e-10, rtol=0)


def test_siglip_dense_is_the_pool_head_on_each_token_alone(map64, tiny):
    visual = map64.visual
    trunk = visual.trunk
    images = tiny.images(2, 32).double()
    feats, dense = forward_features(visual, images, feature_layers=(-2,), dense_mode="attn_pool_value")
    tokens = trunk.forward_features(images)  # (B, P, D) after the final norm; no prefix tokens in this trunk
    assert trunk.num_prefix_tokens == 0 and tokens.shape[1] == 16
    # timm's own head (attention pool + fc_norm + head) and open_clip's head, run on one-token sequences
    expect = torch.stack([visual.head(trunk.forward_head(tokens[:, p:p + 1])) for p in range(16)], dim=1)
    torch.testing.assert_close(dense, expect, atol=1e-10, rtol=0)
    blocks_out = trunk.patch_embed(images)
    blocks_out = trunk.norm_pre(trunk._pos_embed(blocks_out))
    for block in trunk.blocks[:-1]:
        blocks_out = block(blocks_out)
    torch.testing.assert_close(feats[-2], blocks_out, atol=1e-10, rtol=0)


def test_dense_mode_rejects_the_wrong_tower(vit64, map64, tiny):
    with pytest.raises(ValueError, match=r"dense_mode='proj' needs an open_clip VisionTransformer"):
        forward_features(map64.visual, tiny.images(1, 32).double(), dense_mode="proj")
    with pytest.raises(ValueError, match=r"dense_mode='attn_pool_value' needs an open_clip TimmModel"):
        forward_features(vit64.visual, tiny.images(1, 32).double(), dense_mode="attn_pool_value")
    with pytest.raises(ValueError, match=r"dense_mode 'nope' is not one of \['attn_pool_value', 'proj'\]"):
        forward_features(vit64.visual, tiny.images(1, 32).double(), dense_mode="nope")


def test_attentional_pool_tower_is_rejected():
    visual = open_clip.transformer.VisionTransformer(
        image_size=16, patch_size=8, width=32, layers=1, heads=2, mlp_ratio=2.0, attentional_pool=True,
        attn_pooler_queries=4, attn_pooler_heads=2, output_dim=16)
    with pytest.raises(ValueError, match=r"attentional pooler \(CoCa\)"):
        DENSE_MODES["proj"].check(visual)


@pytest.mark.parametrize("layers", [(2,), (-3,), (0.5,)])
def test_bad_feature_layer(vit64, tiny, layers):
    with pytest.raises(ValueError, match=r"feature layer \(a block index of a tower of 2 blocks\) must be an int in \[-2, 1\]"):
        forward_features(vit64.visual, tiny.images(1, 32).double(), feature_layers=layers)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (1, 3, 32, 16), (1, 1, 32, 32), (3, 32, 32)])
def test_wrong_image_size(vit64, shape):
    with pytest.raises(ValueError, match=r"expects 32x32|\(B, 3, 32, 32\)"):
        forward_features(vit64.visual, torch.zeros(shape, dtype=torch.float64))


def test_gradients_flow_when_enabled(vit64, tiny):
    images = tiny.images(1, 32).double().requires_grad_(True)
    feats, dense = forward_features(vit64.visual, images)
    (feats[-2].sum() + dense.sum()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
