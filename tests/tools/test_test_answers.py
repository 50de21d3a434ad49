"""``tools/test.py``'s answers: generation on the split's rows, the answer file, the reference metrics, bad rows.

Everything expected is derived here, independently of the tool: the rows come
from the annotation JSON, the prompts are written by hand in LLaVA's formats
(``plain``: BOS + image; ``conv_vicuna_v1`` for the chat rows), the greedy
answers come from a slow loop over ``LLaVAModel(mode='tensor')`` (the whole
sequence once per new token, argmax, stop at EOS; no cache, no ``generate``),
and exact match / token F1 are recomputed from the written answers by the
implementation at the bottom of this file.
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from alignkit.cli.common import answer_stop_strings, load_model_and_source, stop_token_ids
from alignkit.cli.test import main
from alignkit.datasets.constants import IMAGE_TOKEN_INDEX
from alignkit.datasets.templates.presets import VICUNA_SYSTEM
from alignkit.engine.metrics.answer_match import exact_match, normalize_answer, token_f1
from alignkit.export.hf import image_processor_of
from alignkit.models.llava_model import LLaVAModel

N = 5  # new tokens per answer


# ---------------------------------------------------------------------------------------------- references
def ref_normalise(text: str) -> list[str]:
    """SQuAD v2's rule, character by character: lower-case, drop ASCII punctuation, split, drop a/an/the.

    Articles go as whole words; SQuAD's ``\\b`` regex also cuts one off a symbol (``a+b`` -> ``+b``),
    which splitting at every non-word character and dropping article pieces reproduces.
    """
    kept = "".join(c for c in text.lower() if c not in string.punctuation)
    out = []
    for token in kept.split():
        pieces = re.split(r"(\W+)", token)  # words and the runs of non-word characters between them
        joined = "".join(p for p in pieces if p not in ("a", "an", "the"))
        if joined:
            out.append(joined)
    return out


def ref_scores(prediction: str, reference: str) -> tuple[float, float]:
    p, r = ref_normalise(prediction), ref_normalise(reference)
    em = float(p == r)
    if not p or not r:
        return em, float(p == r)
    shared = sum(min(c, r.count(t)) for t, c in Counter(p).items())
    return em, 0.0 if shared == 0 else 2 * shared / (len(p) + len(r))  # 2PR/(P+R) with P=s/|p|, R=s/|r|


@pytest.mark.parametrize("prediction, reference, em, f1", [
    ("The cat!", "cat", 1.0, 1.0),                      # case, article, punctuation
    ("a red cup", "red cup on the table", 0.0, 2 / 3),   # red cup | red cup on table: P 1, R 1/2, 2PR/(P+R)
    ("don't  stop", "Dont stop.", 1.0, 1.0),             # the apostrophe is deleted, spaces collapse
    ("«Paris»", "paris", 0.0, 0.0),                      # only ASCII punctuation goes (SQuAD)
    ("1+1", "1 + 1", 0.0, 0.0),                          # '+' is ASCII punctuation, deleted: "11" vs "1 1"
    ("a×b", "×b", 1.0, 1.0),                             # SQuAD's \\b regex cuts an article off a symbol
    ("the", "", 1.0, 1.0),                               # both empty after normalisation
    ("", "cat", 0.0, 0.0),
    ("cat cat dog", "cat dog dog", 0.0, 2 / 3),          # multisets: shared {cat, dog}, P = R = 2/3
])
def test_answer_match_on_hand_derived_cases(prediction, reference, em, f1):
    assert exact_match(prediction, reference) == em == ref_scores(prediction, reference)[0]
    assert token_f1(prediction, reference) == pytest.approx(f1) == ref_scores(prediction, reference)[1]
    assert normalize_answer(prediction).split() == ref_normalise(prediction)


def test_an_answer_ends_at_eos_and_at_one_token_turn_ends(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir, eos_token="<|endoftext|>")  # an EOS that is not <|im_end|>
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end != tok.eos_token_id
    assert stop_token_ids(tok, "chatml") == [tok.eos_token_id, im_end]
    assert stop_token_ids(tok, "vicuna_v1") == [tok.eos_token_id]  # its "</s>" and " " are no special tokens here
    assert answer_stop_strings("plain") == ("\n",) and answer_stop_strings("vicuna_v1") == ()


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo(demo_checkpoint):
    work = Path(demo_checkpoint["ckpt"]).parent
    return dict(demo_checkpoint, config=str(work / "demo_tiny.py"))


@pytest.fixture(scope="module")
def reference_model(demo):
    """The checkpoint's model in float32 and its image processor, for the slow greedy loop."""
    model, cfg, _ = load_model_and_source(demo["ckpt"])
    model.autocast_dtype = None
    return model, image_processor_of(cfg, model)


@torch.no_grad()
def slow_greedy(model, ids: list[int], pixels, n: int = N) -> list[int]:
    ids, new = torch.tensor([ids]), []
    for _ in range(n):
        inputs = {"input_ids": ids} if pixels is None else {"input_ids": ids, "images": pixels}
        t = int(model(inputs, mode="tensor")[0, -1].argmax())
        new.append(t)
        if t == model.tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
    return new


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def check_scores(got: dict, answers: list[dict]) -> None:
    scores = [ref_scores(a["text"], a["metadata"]["reference"]) for a in answers]
    for a, (em, f1) in zip(answers, scores):
        assert (a["metadata"]["exact_match"], a["metadata"]["token_f1"]) == pytest.approx((em, f1)), a["question_id"]
    assert got["gen/exact_match"] == pytest.approx(sum(s[0] for s in scores) / len(scores))
    assert got["gen/token_f1"] == pytest.approx(sum(s[1] for s in scores) / len(scores))


# ---------------------------------------------------------------------------------------------- the demo split
def test_demo_split_answers_equal_the_slow_greedy_loop(demo, reference_model, tmp_path, capsys):
    """Default run (metrics and answers) on the demo's validation split: the last 6 rows, template plain."""
    answers_file, out = tmp_path / "answers.jsonl", tmp_path / "m.json"
    got = main([demo["config"], demo["ckpt"], "--work-dir", str(tmp_path / "w"), "--answers-file", str(answers_file),
                "--max-new-tokens", str(N), "--out", str(out)])
    assert any(k.startswith("align/") for k in got)  # the metrics ran too
    rows = json.loads((demo["data"] / "demo_pretrain.json").read_text())[-6:]  # demo_tiny.py: indices=-6
    answers = read_jsonl(answers_file)
    assert [a["question_id"] for a in answers] == [r["id"] for r in rows]

    model, processor = reference_model
    tok = model.tokenizer
    for a, row in zip(answers, rows):
        assert a["prompt"] == row["conversations"][0]["value"].replace("<image>", "").strip()
        assert a["model_id"] == "work/iter_2"
        meta = a["metadata"]
        assert (meta["reference"], meta["image"], meta["template"]) == (row["conversations"][1]["value"],
                                                                        row["image"], "plain")
        assert meta["prompt_text"] == "<image>" and meta["prompt_tokens"] == 2  # plain: BOS + the image
        pixels = processor(Image.open(demo["data"] / row["image"]).convert("RGB"))[None]
        new = slow_greedy(model, [tok.bos_token_id, IMAGE_TOKEN_INDEX], pixels)
        text = tok.decode(new, skip_special_tokens=True)
        assert a["text"] == text.split("\n")[0].strip()  # plain's separator ends a caption
        assert meta["new_tokens"] == len(new)
    assert len({a["answer_id"] for a in answers}) == 6
    assert (got["gen/rows"], got["gen/answered"], got["gen/skipped"], got["gen/skipped_rows"]) == (6, 6, 0, [])
    check_scores(got, answers)
    assert json.loads(out.read_text()) == got
    printed = capsys.readouterr().out
    assert f"gen/token_f1: {got['gen/token_f1']:.6g}" in printed and f"answers: {answers_file}" in printed


# ---------------------------------------------------------------------------------------------- chat rows, bad rows
CHAT_ROWS = [
    {"id": "two-turns", "image": "images/coffee.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A cup of coffee."},
        {"from": "human", "value": "And the colour?"}, {"from": "gpt", "value": "white"}]},
    {"id": "text-only", "conversations": [
        {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "red"}]},
    {"id": "no-question", "image": "images/cat.png", "conversations": [{"from": "gpt", "value": "a cat"}]},
    {"id": "missing-image", "image": "images/nope.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "nothing"}]},
    {"id": "image-last", "image": "images/horse.png", "conversations": [
        {"from": "human", "value": "Describe the image briefly.\n<image>"}, {"from": "gpt", "value": "a horse"}]},
]


def chat_config(demo, tmp_path, rows) -> str:
    """The trained demo's config with its validation split replaced by ``rows`` under template vicuna_v1."""
    ann = tmp_path / "rows.json"
    ann.write_text(json.dumps(rows), encoding="utf-8")
    dataset = dict(_delete_=True, type="LLaVADataset", ann_file=str(ann), image_folder=str(demo["data"]),
                   tokenizer=dict(type="demo_tokenizer"), template="vicuna_v1", max_length=256,
                   image_token_length=64,
                   image_processor=dict(type="OpenCLIPImageProcessor", model_name="alignkit-demo-vit"))
    config = tmp_path / "chat_rows.py"
    config.write_text(f"_base_ = [{demo['config']!r}]\nval_dataloader = dict(dataset={dataset!r})\n")
    return str(config)


def test_chat_rows_are_prompted_as_training_saw_them_and_bad_rows_are_counted(demo, reference_model, tmp_path,
                                                                             monkeypatch, capsys):
    seen = []
    real = LLaVAModel.generate

    def spy(self, input_ids, images=None, *args, **kwargs):
        seen.append((input_ids[0].tolist(), images is not None))
        return real(self, input_ids, images, *args, **kwargs)

    monkeypatch.setattr(LLaVAModel, "generate", spy)
    config = chat_config(demo, tmp_path, CHAT_ROWS)
    answers_file = tmp_path / "a.jsonl"
    got = main([config, demo["ckpt"], "--no-metrics", "--work-dir", str(tmp_path / "w"), "--answers-file",
                str(answers_file), "--max-new-tokens", str(N)])
    assert not any(k.startswith("align/") for k in got)

    model, processor = reference_model
    tok = model.tokenizer

    def ids(before_image, after_image=None):  # LLaVA's tokenizer_image_token, written out
        head = [tok.bos_token_id] + tok.encode(before_image, add_special_tokens=False)
        if after_image is None:
            return head
        return head + [IMAGE_TOKEN_INDEX] + tok.encode(after_image, add_special_tokens=False)

    system = VICUNA_SYSTEM + " USER: "
    expected = {  # conv_vicuna_v1 up to the last "ASSISTANT:"; earlier answers as they were given
        "two-turns": (ids(system, "\nWhat is this? ASSISTANT: A cup of coffee.</s>USER: And the colour? ASSISTANT:"),
                      "coffee.png", "And the colour?"),
        "text-only": (ids(system + "Name a colour. ASSISTANT:"), None, "Name a colour."),
        "image-last": (ids(system, "\nDescribe the image briefly. ASSISTANT:"), "horse.png",
                       "Describe the image briefly."),
    }
    assert [s[0] for s in seen] == [e[0] for e in expected.values()]
    assert [s[1] for s in seen] == [e[1] is not None for e in expected.values()]

    answers = read_jsonl(answers_file)
    assert [a["question_id"] for a in answers] == list(expected)
    for a, (prompt, image, question) in zip(answers, expected.values()):
        pixels = None if image is None else processor(Image.open(demo["data"] / "images" / image).convert("RGB"))[None]
        new = slow_greedy(model, prompt, pixels)
        assert a["text"] == tok.decode(new, skip_special_tokens=True).strip(), a["question_id"]
        assert a["prompt"] == question and a["metadata"]["template"] == "vicuna_v1"
        assert a["metadata"]["stopped"] == ("eos" if new[-1] == tok.eos_token_id else "max_new_tokens")
    assert [a["metadata"]["reference"] for a in answers] == ["white", "red", "a horse"]

    # the two bad rows: counted under the dataset's reasons, listed with their ids, printed
    assert (got["gen/rows"], got["gen/answered"], got["gen/skipped"]) == (5, 3, 2)
    assert got["gen/skipped/bad_conversation"] == 1 and got["gen/skipped/missing_image"] == 1
    assert [(s["row"], s["id"], s["reason"]) for s in got["gen/skipped_rows"]] == [
        (2, "no-question", "bad_conversation"), (3, "missing-image", "missing_image")]
    assert "no human turn" in got["gen/skipped_rows"][0]["detail"]
    printed = capsys.readouterr().out
    assert "skipped row 2 (id 'no-question') [bad_conversation]" in printed
    assert "skipped row 3 (id 'missing-image') [missing_image]" in printed

    check_scores(got, answers)


def test_sampled_answers_draw_row_i_with_seed_plus_i(demo, reference_model, tmp_path):
    rows = json.loads((demo["data"] / "demo_pretrain.json").read_text())[-6:]
    got = main([demo["config"], demo["ckpt"], "--no-metrics", "--work-dir", str(tmp_path / "w"), "--answers-file",
                str(tmp_path / "s.jsonl"), "--max-new-tokens", str(N), "--temperature", "5", "--top-p", "0.9",
                "--seed", "7", "--limit", "2"])
    answers = read_jsonl(tmp_path / "s.jsonl")
    assert got["gen/rows"] == 2 and [a["question_id"] for a in answers] == [r["id"] for r in rows[:2]]
    model, processor = reference_model
    tok = model.tokenizer
    for i, (a, row) in enumerate(zip(answers, rows)):
        assert (a["metadata"]["seed"], a["metadata"]["temperature"], a["metadata"]["top_p"]) == (7 + i, 5.0, 0.9)
        pixels = processor(Image.open(demo["data"] / row["image"]).convert("RGB"))[None]
        torch.manual_seed(7 + i)  # one draw through the public generate, as documented
        new = model.generate(torch.tensor([[tok.bos_token_id, IMAGE_TOKEN_INDEX]]), pixels, max_new_tokens=N,
                             do_sample=True, temperature=5.0, top_p=0.9)[0].tolist()
        assert a["text"] == tok.decode(new, skip_special_tokens=True).split("\n")[0].strip()
    # rows 0 and 1 share an image (and so a greedy answer): sampled with their own seeds they differ
    assert answers[0]["text"] != answers[1]["text"]


def test_bad_flags_are_argparse_errors(demo, capsys):
    for argv, message in ((["--no-metrics", "--no-generate"], "leave nothing to do"),
                          (["--temperature", "-1"], "--temperature must be >= 0"),
                          (["--top-p", "0"], r"--top-p must be in (0, 1]"),
                          (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1")):
        with pytest.raises(SystemExit) as exc:
            main([demo["config"], demo["ckpt"], *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_answers_do_not_read_the_splits_label_cache(demo, tmp_path):
    """Answers need no patch labels: the split's label cache is not opened (here it does not even exist, which
    would stop a metrics run), so a row the cache lacks is still answered."""
    got = main([demo["config"], demo["ckpt"], "--no-metrics", "--work-dir", str(tmp_path / "w"), "--max-new-tokens",
                "2", "--limit", "1", "--cfg-options", f"val_dataloader.dataset.label_cache={tmp_path / 'no_cache'}"])
    assert (got["gen/answered"], got["gen/skipped"]) == (1, 0)
    assert not (tmp_path / "no_cache").exists()
