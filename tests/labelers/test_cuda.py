"""The labelers on a GPU agree with the CPU (skipped where there is no CUDA device)."""
import pytest
import torch

from alignkit.labelers.functional import chunked_topn
from alignkit.towers.open_clip import forward_features
from alignkit.registry import LABELERS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def build(tiny, kind, word_file, cache_dir, device, **kw):
    name = tiny.VIT if kind == "CLIPTopNLabeler" else tiny.MAP
    return LABELERS.build(dict(type=kind, model_name=name, pretrained=tiny.weights[name], word_list=word_file,
                               cache_dir=str(cache_dir), device=device, top_n=5, min_score=float("-inf"), **kw))


@pytest.mark.parametrize("kind", ["CLIPTopNLabeler", "SigLIPTopNLabeler"])
def test_gpu_labels_match_cpu(tiny, word_file, tmp_path, kind):
    cpu = build(tiny, kind, word_file, tmp_path, "cpu")
    gpu = build(tiny, kind, word_file, tmp_path, "cuda")  # topn_dtype defaults to bf16 on CUDA
    assert not gpu.bank_info["built"]  # the bank cached by the CPU labeler is reused
    images = tiny.images(4, 32)
    dense_cpu, dense_gpu = cpu.encode_patches(images), gpu.encode_patches(images)
    assert dense_gpu.is_cuda
    # cuDNN convolutions run in TF32 by default: ~1e-3 differences in the patch embedding
    torch.testing.assert_close(dense_gpu.cpu(), dense_cpu, atol=5e-3, rtol=0)
    a, b = cpu.label(dense_cpu), gpu.label(dense_gpu)
    assert b.words.is_cuda and b.scores.dtype == torch.float32
    same = a.words == b.words.cpu()
    assert same.float().mean() > 0.9
    torch.testing.assert_close(b.scores.cpu()[same], a.scores[same], atol=5e-3, rtol=0)


def test_bf16_model_runs_and_labels_on_gpu(tiny, word_file, tmp_path):
    lab = build(tiny, "CLIPTopNLabeler", word_file, tmp_path, "cuda", precision="bf16")
    images = tiny.images(2, 32).cuda()
    feats, dense = forward_features(lab.visual, images.to(torch.bfloat16), feature_layers=(-2,))
    assert dense.dtype == torch.bfloat16 and feats[-2].shape == (2, 16, 64)
    labels = lab.label(dense)
    labels.check(num_words=lab.num_words)
    assert labels.words.shape == (2, 16, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_chunked_topn_on_gpu(dtype):
    gen = torch.Generator().manual_seed(0)
    dense = torch.nn.functional.normalize(torch.randn(300, 64, generator=gen), dim=-1)
    bank = torch.nn.functional.normalize(torch.randn(5000, 64, generator=gen), dim=-1)
    ref = (dense.double() @ bank.double().t()).sort(dim=1, descending=True)
    scores, ids = chunked_topn(dense.cuda(), bank.cuda(), 10, chunk_size=64, compute_dtype=dtype)
    exact = (dense.double() @ bank.double().t()).gather(1, ids.cpu())
    torch.testing.assert_close(scores.cpu().double(), exact, atol=1e-5, rtol=0)  # fp32 scores of the ids
    assert (ids.cpu() == ref.indices[:, :10]).float().mean() > 0.97
