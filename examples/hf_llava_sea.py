"""SEA stage 1 on a transformers LlavaForConditionalGeneration with the Hugging Face Trainer.

docs/design.md's use 3 for code built on transformers: your LLaVA, your Trainer,
SEA's align loss added in a few lines (marked ``# SEA`` below) with
:class:`alignkit.integrations.transformers.LlavaSEA`. It runs offline on a
CPU in under a minute: the LLaVA, its CLIP and the LLM are tiny and random
(built locally), the images are scikit-image's sample photographs with
captions written for alignkit, the tokenizers are real.

    python examples/hf_llava_sea.py --steps 30

Stage 1 as in LLaVA-1.5: vision tower and LLM frozen, the projector trains
(here with the align loss's temperature), ``plain`` template (image, caption).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from alignkit.datasets import open_image
from alignkit.integrations.transformers import LlavaSEA
from alignkit.labelers import HFCLIPTopNLabeler
from alignkit.testing.demo import DEMO_CAPTIONS, demo_tokenizer, write_demo_data
from alignkit.testing.hf_tiny import save_hf_tower, tiny_clip, tiny_llava

IGNORE = -100
WORDS = sorted({w for caps in DEMO_CAPTIONS.values() for c in caps for w in c.split() if len(w) > 3})


class CaptionData(torch.utils.data.Dataset):
    """LLaVA-Pretrain rows -> ``input_ids`` (BOS, P image tokens, caption, EOS), ``labels``, ``pixel_values``."""

    def __init__(self, ann_file: str, tokenizer, image_processor, image_token_id: int, num_patches: int) -> None:
        self.root = Path(ann_file).parent
        self.rows = json.loads(Path(ann_file).read_text(encoding="utf-8"))
        self.tok, self.proc = tokenizer, image_processor
        self.prefix = [tokenizer.bos_token_id] + [image_token_id] * num_patches

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        caption = self.tok(row["conversations"][1]["value"], add_special_tokens=False)["input_ids"]
        target = caption + [self.tok.eos_token_id]
        image = open_image(row["image"], root=self.root)  # alignkit's one image opener: RGB, checked, confined
        pixels = self.proc(image)  # transformers' CLIPImageProcessor, as LLaVA preprocesses
        return dict(input_ids=self.prefix + target, labels=[IGNORE] * len(self.prefix) + target, pixel_values=pixels)


def collate(pad_id: int):
    def fn(items: list[dict]) -> dict:
        n = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), n), pad_id)
        labels = torch.full((len(items), n), IGNORE)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        for r, x in enumerate(items):
            ids[r, :len(x["input_ids"])] = torch.tensor(x["input_ids"])
            labels[r, :len(x["labels"])] = torch.tensor(x["labels"])
            mask[r, :len(x["input_ids"])] = 1
        return dict(input_ids=ids, labels=labels, attention_mask=mask,
                    pixel_values=torch.stack([x["pixel_values"] for x in items]))
    return fn


def build(workdir: str | Path, seed: int = 0):
    """The tiny LLaVA (tower and LLM frozen), its LLM tokenizer, the labeler over the same CLIP, the data."""
    workdir = Path(workdir)
    clip = tiny_clip(seed=seed)  # a CLIPModel, as LLaVA's openai/clip-vit-large-patch14-336 is
    clip_dir = save_hf_tower(clip, workdir / "clip")
    tokenizer = demo_tokenizer()
    model = tiny_llava(clip, tokenizer, seed=seed)
    model.requires_grad_(False)
    projector = model.model.multi_modal_projector
    projector.requires_grad_(True)
    labeler = HFCLIPTopNLabeler(clip_dir, word_list=WORDS, top_n=5, cache_dir=str(workdir / "text_banks"),
                                device="cpu")
    grid = labeler.grid
    data = CaptionData(write_demo_data(workdir / "data"), tokenizer, labeler.transform,
                       model.config.image_token_id, grid[0] * grid[1])
    return model, tokenizer, labeler, data


class SEATrainer(Trainer):
    """The Trainer with SEA's align loss added to the LM loss of the same forward."""

    def __init__(self, *args, sea: LlavaSEA, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sea, self.align_losses = sea, []

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        outputs = model(**inputs)
        align = self.sea()  # SEA: labels, samples and InfoNCE on this forward's visual tokens
        self.align_losses.append(align["loss_align"].item())
        loss = outputs.loss + align["loss_align"]  # SEA
        return (loss, outputs) if return_outputs else loss


@torch.no_grad()
def probe_align_loss(model, sea: LlavaSEA, batch: dict) -> float:
    """The align loss of one fixed batch with fixed draws: comparable before and after training."""
    sea.generator = torch.Generator().manual_seed(0)
    model(**batch)
    value = sea()["loss_align"].item()
    sea.generator = None
    return value


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where the tiny models and data go (default: a temp dir)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        model, tokenizer, labeler, data = build(workdir, seed=args.seed)
        sea = LlavaSEA(model, labeler, tokenizer)  # SEA: hooks the tower and the projector, builds the word table
        params = [*model.model.multi_modal_projector.parameters(), *sea.parameters()]  # SEA: + the temperature
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        train_args = TrainingArguments(
            output_dir=str(workdir / "out"), max_steps=args.steps, per_device_train_batch_size=args.batch,
            learning_rate=args.lr, lr_scheduler_type="constant", logging_steps=10, save_strategy="no",
            report_to="none", use_cpu=True, seed=args.seed, dataloader_num_workers=0,
            remove_unused_columns=False, disable_tqdm=True,
        )
        batches = collate(tokenizer.pad_token_id)
        trainer = SEATrainer(model=model, args=train_args, train_dataset=data, data_collator=batches,
                             optimizers=(optimizer, None), sea=sea)
        fixed = batches([data[i] for i in range(0, len(data), 3)])  # one image of each kind
        before = probe_align_loss(model, sea, fixed)
        trainer.train()
        after = probe_align_loss(model, sea, fixed)
        sea.remove()
    result = dict(before=before, after=after, steps=trainer.align_losses,
                  temperature=float(sea.aligner.loss.temperature))
    print(f"loss_align on a fixed batch: {before:.4f} before, {after:.4f} after {args.steps} steps; "
          f"temperature {result['temperature']:.4f}")
    print("result_json=" + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
