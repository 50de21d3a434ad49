"""LLaVAModel: splicing against a per-row reference, stage freezing, forward modes, the stage-1 artifact."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_batch, tiny_model_cfg
from torch import nn

from alignkit.cli.convert_checkpoint import main as convert_checkpoint_main
from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from alignkit.export import load_adapter, save_adapter
from alignkit.models import splice_visual_tokens
from alignkit.registry import MODELS


def reference_splice(input_ids, visual, embed, labels, mask):
    """Row by row, placeholder by placeholder: the layout LLaVA builds with Python lists."""
    rows, k = [], 0
    for ids, lab, m in zip(input_ids.tolist(), labels.tolist(), mask.tolist()):
        e, l, a = [], [], []
        for tok, y, mm in zip(ids, lab, m):
            if tok == IMAGE_TOKEN_INDEX:
                e.extend(visual[k]), l.extend([IGNORE_INDEX] * visual.shape[1]), a.extend([1] * visual.shape[1])
                k += 1
            else:
                e.append(embed(torch.tensor(tok))), l.append(y), a.append(mm)
        rows.append((e, l, a))
    length = max(len(r[1]) for r in rows)
    width = visual.shape[-1]
    emb = torch.zeros(len(rows), length, width)
    out_l = torch.full((len(rows), length), IGNORE_INDEX)
    out_m = torch.zeros(len(rows), length, dtype=torch.long)
    for i, (e, l, a) in enumerate(rows):
        emb[i, : len(e)] = torch.stack(e)
        out_l[i, : len(l)] = torch.tensor(l)
        out_m[i, : len(a)] = torch.tensor(a)
    return emb, out_l, out_m


@pytest.mark.parametrize("seed", range(4))
def test_splice_matches_the_row_by_row_reference(seed):
    g = torch.Generator().manual_seed(seed)
    b, t, p, e, vocab = 4, 9, 5, 6, 30
    input_ids = torch.randint(0, vocab, (b, t), generator=g)
    labels = torch.randint(0, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    # row 0: image at position 1; row 1: text only, padded; row 2: two images; row 3: image last
    input_ids[0, 1] = IMAGE_TOKEN_INDEX
    mask[1, 6:] = 0
    input_ids[2, 0] = input_ids[2, 4] = IMAGE_TOKEN_INDEX
    input_ids[3, t - 1] = IMAGE_TOKEN_INDEX
    labels[input_ids == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
    visual = torch.randn(4, p, e, generator=g)
    embed = nn.Embedding(vocab, e)
    out = splice_visual_tokens(input_ids, visual, embed, labels=labels, attention_mask=mask)
    with torch.no_grad():
        ref_e, ref_l, ref_m = reference_splice(input_ids, visual, embed, labels, mask)
    assert out.inputs_embeds.shape == (b, t + 2 * (p - 1), e)
    torch.testing.assert_close(out.inputs_embeds.detach(), ref_e)
    assert torch.equal(out.labels, ref_l)
    assert torch.equal(out.attention_mask, ref_m)
    # the visual tokens sit exactly where visual_positions says, labels -100 there
    rows = torch.tensor([0, 2, 2, 3]).unsqueeze(1).expand(-1, p)
    torch.testing.assert_close(out.inputs_embeds[rows, out.visual_positions].detach(), visual)
    assert (out.labels[rows, out.visual_positions] == IGNORE_INDEX).all()
    # the text-only row is untouched: same embeddings, same labels, padding only appended
    torch.testing.assert_close(out.inputs_embeds[1, :t].detach(), embed(input_ids[1]).detach())
    assert torch.equal(out.labels[1, :t], labels[1]) and not out.attention_mask[1, 6:].any()


def test_splice_rejects_a_count_mismatch():
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 2]])
    with pytest.raises(ValueError, match="1 image placeholder"):
        splice_visual_tokens(ids, torch.zeros(2, 3, 4), nn.Embedding(5, 4))


@pytest.fixture(scope="module")
def sea_model():
    return MODELS.build(tiny_model_cfg(aligner=True))


def test_stage1_freezing_leaves_only_adapter_and_temperature_trainable(sea_model):
    trainable = {n for n, p in sea_model.named_parameters() if p.requires_grad}
    adapter = {f"adapter.{n}" for n, _ in sea_model.adapter.named_parameters()}
    assert trainable == adapter | {"aligner.loss.logit_scale"}
    baseline = MODELS.build(tiny_model_cfg(aligner=False))
    assert {n for n, p in baseline.named_parameters() if p.requires_grad} == adapter
    stage2 = MODELS.build(tiny_model_cfg(aligner=False, trainable=["adapter", "llm"]))
    names = {n.split(".")[0] for n, p in stage2.named_parameters() if p.requires_grad}
    assert names == {"adapter", "llm"}
    with pytest.raises(ValueError, match="trainable"):
        MODELS.build(tiny_model_cfg(aligner=False, trainable=["projector"]))


def test_loss_mode_returns_both_losses_and_loss_free_log_keys(sea_model):
    sea_model.train()
    out = sea_model(**tiny_batch(sea_model), mode="loss")
    assert {"loss_lm", "loss_align"} <= set(out)
    assert [k for k in out if "loss" in k] == ["loss_lm", "loss_align"]
    assert all(torch.isfinite(v).all() for v in out.values())
    assert sea_model.vision_encoder.tower.training is False  # frozen tower stays in eval mode
    total = out["loss_lm"] + out["loss_align"]
    total.backward()
    grads = {n for n, p in sea_model.named_parameters() if p.grad is not None}
    assert "aligner.loss.logit_scale" in grads and any(n.startswith("adapter.") for n in grads)
    assert not any(n.startswith(("llm.", "vision_encoder.")) for n in grads)
    sea_model.zero_grad(set_to_none=True)


def test_tensor_mode_logits_cover_spliced_length(sea_model):
    batch = tiny_batch(sea_model)
    logits = sea_model(**batch, mode="tensor")
    b, t = batch["inputs"]["input_ids"].shape
    p = sea_model.num_visual_tokens
    assert p == 64
    assert logits.shape == (b, t + p - 1, len(sea_model.tokenizer))


def test_text_only_batch_skips_vision_and_aligner(sea_model):
    batch = tiny_batch(sea_model, b=2, text_only_row=0)
    batch["inputs"]["has_image"][:] = False
    batch["inputs"]["input_ids"][1] = batch["inputs"]["input_ids"][1].masked_fill(
        batch["inputs"]["input_ids"][1] == IMAGE_TOKEN_INDEX, sea_model.tokenizer.pad_token_id)
    out = sea_model(**batch, mode="loss")
    assert "loss_align" not in out and torch.isfinite(out["loss_lm"])


def test_predict_mode_generates_greedily(sea_model):
    sea_model.max_new_tokens = 3
    batch = tiny_batch(sea_model, b=1, text_only_row=-1)
    batch["inputs"]["labels"] = None
    out = sea_model(**batch, mode="predict")
    assert len(out) == 1 and out[0].shape[-1] <= 3


def test_adapter_artifact_round_trip_and_llava_keys(sea_model, tmp_path):
    path = save_adapter(tmp_path / "adapter.safetensors", sea_model.adapter, sea_model.aligner.loss)
    art = load_adapter(path)
    rebuilt = art.build_adapter()
    for k, v in sea_model.adapter.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v)
    assert torch.equal(art.loss_state["logit_scale"], sea_model.aligner.loss.logit_scale.detach())
    assert art.metadata["llava_projector_type"] == "mlp2x_gelu"

    convert_checkpoint_main([str(path), str(tmp_path / "mm_projector.bin")])
    llava = torch.load(tmp_path / "mm_projector.bin", weights_only=True)
    assert sorted(llava) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                             "model.mm_projector.2.bias", "model.mm_projector.2.weight"]
    assert torch.equal(llava["model.mm_projector.2.weight"], sea_model.adapter.layers[2].weight.detach())
    convert_checkpoint_main(["--to", "alignkit", str(tmp_path / "mm_projector.bin"), str(tmp_path / "back.safetensors")])
    back = load_adapter(tmp_path / "back.safetensors").build_adapter()
    assert torch.equal(back.layers[0].weight, sea_model.adapter.layers[0].weight.detach())

    # stage 2 starts from the artifact
    stage2 = MODELS.build(tiny_model_cfg(aligner=False, trainable=["adapter", "llm"], adapter_weights=str(path)))
    assert torch.equal(stage2.adapter.layers[0].weight, sea_model.adapter.layers[0].weight.detach())
    wrong = tiny_model_cfg(aligner=False, adapter_weights=str(path))
    wrong["llm"]["config"]["hidden_size"] = 32
    with pytest.raises(ValueError, match="llm_dim"):
        MODELS.build(wrong)


def test_gradient_checkpointing_gives_the_same_loss_and_adapter_gradients():
    plain = MODELS.build(tiny_model_cfg(aligner=False, autocast_dtype=None))
    ckpt = MODELS.build(tiny_model_cfg(aligner=False, autocast_dtype=None, gradient_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, ckpt):
        model.train()
        loss = model(**tiny_batch(model), mode="loss")["loss_lm"]
        loss.backward()
        grads.append((loss.item(), model.adapter.layers[0].weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][1], grads[1][1])
