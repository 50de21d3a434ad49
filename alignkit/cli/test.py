"""``tools/test.py CONFIG CHECKPOINT``: a checkpoint's alignment metrics and its answers on the config's split.

The split is the config's test split (``test_dataloader``), else its
validation split (``val_dataloader``). CONFIG names the data, so it is needed
(a checkpoint carries its model, never its data); it may be the config
mmengine dumped in the work dir, or a packaged name (``sea/demo_tiny.py``).
The checkpoint's weights are loaded strictly: a checkpoint of another model
is refused with the first differing key.

Two parts, both on by default:

- Alignment metrics (``--no-metrics`` skips them): mmengine's test loop with
  the split's evaluator (``AlignmentMetric``: label retrieval top-1/top-5, mean
  rank, label cosine, nearest-word agreement, TACS; docs/evaluation.md). A
  config whose split has no evaluator gets the answers only.
- Answers (``--no-generate`` skips them): for each row of the split, the
  model's answer to the conversation up to its last ``gpt`` turn, prompted
  exactly as training tokenized that row (the dataset's own template,
  tokenizer and image processor), greedy (``--temperature 0``, the default)
  or sampled (``--temperature``, ``--top-p``; row i draws with seed
  ``--seed`` + i). Written as JSON Lines to ``--answers-file`` (default
  ``<work-dir>/answers.jsonl``) in LLaVA's ``model_vqa`` answer format:
  ``question_id``, ``prompt``, ``text``, ``answer_id``, ``model_id``,
  ``metadata`` (reference, scores, what the model saw). The last ``gpt``
  turn is the reference: exact match and token F1 after SQuAD-style
  normalisation (``alignkit.engine.metrics.answer_match``) are averaged
  into ``gen/exact_match`` and ``gen/token_f1``. A row that cannot be
  prompted (the dataset's reasons: no human turn, missing image, ...) is
  skipped, counted under its reason and listed with its id; never dropped
  silently. Generation runs one row at a time, in float32 (``--autocast``
  keeps the model's autocast dtype, e.g. bf16 on a GPU).

Prints the metrics, writes them to ``--out`` (JSON) when asked and returns
them (with ``gen/skipped_rows``: row, id, reason and detail of each skip).
Logs go to ``--work-dir`` (default ``./work_dirs/test_<config stem>``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from mmengine.config import DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from alignkit.cli import console, plain
import alignkit.registry  # noqa: F401  (the 'alignkit' scope)
from alignkit.cli.common import (
    answer_prompt,
    answer_stop_strings,
    build_model,
    load_weights,
    resolve,
    sampling_kwargs,
    stop_token_ids,
)
from alignkit.datasets.constants import IGNORE_INDEX, IMAGE_TOKEN, BadSample
from alignkit.datasets.templates import normalise_conversation, tokenize_with_image
from alignkit.engine.compat import apply_compat
from alignkit.engine.hooks import require_hooks
from alignkit.engine.metrics.answer_match import exact_match, token_f1
from alignkit.project_configs import find_config
from alignkit.registry import DATASETS
from alignkit.utils.io import atomic_path

LISTED_SKIPS = 20  # skipped rows printed one by one; all of them are in --out


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="alignkit-test", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="the config (a file, or a packaged name such as sea/demo_tiny.py)")
    p.add_argument("checkpoint", help="the checkpoint (iter_N.pth)")
    p.add_argument("--work-dir", help="where the test logs go (default: ./work_dirs/test_<config stem>)")
    p.add_argument("--out", help="also write the metrics (and the skipped rows) to this JSON file")
    p.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="run the split's evaluator (the alignment metrics); default: on")
    p.add_argument("--generate", action=argparse.BooleanOptionalAction, default=True,
                   help="answer every row of the split and score the answers; default: on")
    p.add_argument("--answers-file", help="the answers, JSON Lines (default: <work-dir>/answers.jsonl)")
    p.add_argument("--max-new-tokens", type=int, help="longest answer (default: the model's max_new_tokens)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (with --temperature > 0)")
    p.add_argument("--seed", type=int, default=0, help="with --temperature > 0, row i samples with seed SEED + i")
    p.add_argument("--limit", type=int, help="answer only the first N rows of the split")
    p.add_argument("--model-id", help="model_id of the answers (default: <checkpoint folder>/<checkpoint stem>)")
    p.add_argument("--autocast", action="store_true", help="generate under the model's autocast dtype "
                                                           "(default: float32)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE", help="override config entries")
    args = p.parse_args(argv)
    if not args.metrics and not args.generate:
        p.error("--no-metrics and --no-generate together leave nothing to do")
    if not args.temperature >= 0:
        p.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--limit", args.limit)):
        if value is not None and value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    return p, args


def pick_split(cfg) -> tuple[str, bool]:
    """``(split, has_evaluator)``: test, else validation; a split with an evaluator first."""
    for split in ("test", "val"):
        if cfg.get(f"{split}_dataloader") and cfg.get(f"{split}_evaluator"):
            return split, True
    for split in ("test", "val"):
        if cfg.get(f"{split}_dataloader"):
            return split, False
    raise ValueError(f"config {cfg.filename!r} has neither test_dataloader nor val_dataloader: nothing to evaluate on")


def test_config(cfg, work_dir: str | None):
    """``cfg`` set up for ``Runner.test()`` on the split of :func:`pick_split`, which must have an evaluator."""
    split, has_evaluator = pick_split(cfg)
    if not has_evaluator:
        raise ValueError(f"config {cfg.filename!r} has neither test_dataloader + test_evaluator nor "
                         "val_dataloader + val_evaluator: no metrics to compute (--no-metrics: answers only)")
    cfg.test_dataloader, cfg.test_evaluator = cfg[f"{split}_dataloader"], cfg[f"{split}_evaluator"]
    cfg.test_cfg = cfg.get("test_cfg") or dict(type="TestLoop")
    cfg.load_from, cfg.resume = None, False  # loaded strictly by main, not by mmengine's lenient loader
    cfg.setdefault("default_scope", "alignkit")
    cfg.work_dir = work_dir
    cfg.launcher = "none"
    cfg.pop("strategy", None)  # evaluation runs on one process, without DeepSpeed
    cfg.pop("runner_type", None)
    return require_hooks(cfg, ("LabelCacheCheckHook",))  # a label cache must match the model it is scored with


# ---------------------------------------------------------------------------------------------- answers
def training_prompt(input_ids: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """The ids before the last answer: training's ``input_ids`` up to the first supervised position of the last run
    of supervised labels (the last ``gpt`` turn)."""
    supervised = (labels != IGNORE_INDEX).tolist()
    end = len(supervised) - supervised[::-1].index(True)
    start = end
    while start > 0 and supervised[start - 1]:
        start -= 1
    return input_ids[:start].tolist()


class RowSkipped(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def prompt_of_row(dataset, index: int) -> dict:
    """What row ``index`` is answered from: ``sample`` (the dataset's, as training prepares it), ``ids`` (the prompt),
    ``prompt_text``, ``question`` and ``reference``; ``RowSkipped`` with the dataset's reason when it cannot be."""
    info = dataset.get_data_info(index)
    try:
        sample = dataset.prepare_data(index)  # training's checks and tokens; no random replacement
    except BadSample as err:
        raise RowSkipped(err.reason, err.detail) from None
    messages = normalise_conversation(info["conversations"], sample["has_image"])
    prompt_text = answer_prompt(dataset.template, info["conversations"], sample["has_image"])
    ids = training_prompt(sample["input_ids"], sample["labels"])
    if tokenize_with_image(dataset.tokenizer, prompt_text, dataset.template.add_bos) != ids:
        # The template's prompt text must give training's ids; only a cut sequence (truncate=True) differs.
        if sample.get("truncated"):
            raise RowSkipped("too_long", f"max_length {dataset.max_length} cut the prompt: no answer to prompt for")
        raise RowSkipped("mismatch", f"the prompt text {prompt_text[-60:]!r} does not give training's prompt ids")
    question = messages[-2].text.replace(IMAGE_TOKEN, "").strip()
    return dict(info=info, sample=sample, ids=ids, prompt_text=prompt_text, question=question,
                reference=messages[-1].text)


def cut_at(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first of ``stops`` (and whether one was found)."""
    cuts = [text.index(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def answer_id(model_id: str, row: int, question_id: str, settings: dict) -> str:
    """A stable id of one answer: the same model, row and settings give the same id (LLaVA draws a random one)."""
    key = json.dumps([model_id, row, question_id, settings], sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:22]


@torch.no_grad()
def write_answers(model, dataset, path: Path, model_id: str, gen: dict, seed: int, limit: int | None) -> dict:
    """Answer the rows of ``dataset`` into ``path`` (JSON Lines, atomic); the ``gen/*`` metrics and skipped rows."""
    device = next(model.parameters()).device
    tokenizer, template = model.tokenizer, dataset.template
    gen = dict(gen)
    stops = stop_token_ids(tokenizer, template)
    if stops:
        gen["eos_token_id"] = stops
    stop_strings = answer_stop_strings(template)
    sampling = gen["do_sample"]
    n = len(dataset) if limit is None else min(limit, len(dataset))
    skipped, scores, lengths, at_limit = [], [], [], 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i in range(n):
            try:
                row = prompt_of_row(dataset, i)
            except RowSkipped as err:
                info = dataset.get_data_info(i)
                skipped.append(dict(row=i, id=info.get("sample_id"), reason=err.reason, detail=err.detail))
                continue
            sample = row["sample"]
            ids = torch.tensor([row["ids"]], device=device)
            images = sample["image"][None].to(device) if sample["has_image"] else None
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                if sampling:
                    torch.manual_seed(seed + i)
                new = model.generate(ids, images, **gen)[0].tolist()
            text, cut = cut_at(tokenizer.decode(new, skip_special_tokens=True), stop_strings)
            text = text.strip()
            stopped = "stop_string" if cut else "eos" if new and new[-1] in stops else "max_new_tokens"
            at_limit += stopped == "max_new_tokens"
            lengths.append(len(new))
            em, f1 = exact_match(text, row["reference"]), token_f1(text, row["reference"])
            scores.append((em, f1))
            settings = dict(template=template.name, max_new_tokens=gen["max_new_tokens"])
            if sampling:
                settings.update(temperature=gen["temperature"], top_p=gen["top_p"], seed=seed + i)
            qid = sample["sample_id"]
            record = dict(
                question_id=qid, prompt=row["question"], text=text,
                answer_id=answer_id(model_id, i, qid, settings), model_id=model_id,
                metadata=dict(row=i, image=row["info"].get("image"), reference=row["reference"], exact_match=em,
                              token_f1=f1, prompt_text=row["prompt_text"], prompt_tokens=len(row["ids"]),
                              new_tokens=len(new), stopped=stopped, **settings),
            )
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            if (i + 1) % max(1, n // 10) == 0 or i + 1 == n:
                print_log(f"answered {i + 1}/{n} rows ({len(skipped)} skipped)", logger="current")
    answered = len(scores)

    def mean(values):  # None (JSON null) when no row was answered
        return sum(values) / answered if answered else None

    metrics = {
        "gen/rows": n,
        "gen/answered": answered,
        "gen/skipped": len(skipped),
        "gen/exact_match": mean([s[0] for s in scores]),
        "gen/token_f1": mean([s[1] for s in scores]),
        "gen/mean_new_tokens": mean(lengths),
        "gen/at_max_new_tokens": at_limit,
    }
    for reason, count in sorted(Counter(s["reason"] for s in skipped).items()):
        metrics[f"gen/skipped/{reason}"] = count
    return dict(metrics=metrics, skipped=skipped)


def build_split_dataset(cfg, split: str):
    """The split's dataset for answering: its rows as training prepares them, without a label cache (answers need no
    patch labels, and a row the cache lacks must still be answered)."""
    dataset_cfg = dict(cfg[f"{split}_dataloader"]["dataset"])
    if dataset_cfg.get("label_cache") is not None:
        dataset_cfg["label_cache"] = None
    dataset = DATASETS.build(dataset_cfg)
    missing = [a for a in ("template", "tokenizer", "get_data_info", "prepare_data") if not hasattr(dataset, a)]
    if missing:
        raise ValueError(f"{split}_dataloader.dataset is a {type(dataset).__name__}, without {missing}: answers are "
                         "generated from LLaVADataset rows (--no-generate: metrics only)")
    return dataset


# ---------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict:
    parser, args = parse_args(argv)
    cfg, source = resolve(find_config(args.config), args.checkpoint)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    work_dir = args.work_dir or str(Path("work_dirs") / f"test_{Path(cfg.filename or 'config').stem}")
    split, has_evaluator = pick_split(cfg)
    metrics: dict = {}
    if args.metrics and (has_evaluator or not args.generate):
        runner = Runner.from_cfg(apply_compat(test_config(cfg, work_dir)))
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        load_weights(model, source.checkpoint)
        metrics.update({k: float(v) if isinstance(v, (int, float)) else v for k, v in runner.test().items()})
    else:
        if args.metrics:
            print(f"note: the {split} split has no evaluator: answers only", flush=True)
        model = build_model(cfg, "cuda" if torch.cuda.is_available() else "cpu")
        load_weights(model, source.checkpoint)
    skipped = []
    if args.generate:
        if not args.autocast:
            model.autocast_dtype = None
        dataset = build_split_dataset(cfg, split)
        answers = Path(args.answers_file or Path(work_dir) / "answers.jsonl")
        ckpt = Path(source.checkpoint)
        model_id = args.model_id or f"{ckpt.parent.name}/{ckpt.stem}"
        gen = sampling_kwargs(args.max_new_tokens or model.max_new_tokens, args.temperature, args.top_p)
        result = write_answers(model, dataset, answers, model_id, gen, args.seed, args.limit)
        metrics.update(result["metrics"])
        skipped = result["skipped"]
    for key, value in metrics.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    if args.generate:
        print(f"answers: {answers}")
        for s in skipped[:LISTED_SKIPS]:
            print(f"skipped row {s['row']} (id {s['id']!r}) [{s['reason']}] {s['detail']}")
        if len(skipped) > LISTED_SKIPS:
            print(f"... and {len(skipped) - LISTED_SKIPS} more skipped rows" + (" (all in --out)" if args.out else ""))
    if args.generate:
        metrics["gen/skipped_rows"] = skipped
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics


cli = console(main)  # the console script alignkit-test

if __name__ == "__main__":
    main()
