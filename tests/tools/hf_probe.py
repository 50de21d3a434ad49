"""Load an exported LLaVA folder with whatever transformers is importable and record what it computes.

Run as a script in a subprocess whose ``PYTHONPATH`` puts another transformers
(4.45, 4.57, in a side directory) first: ``python hf_probe.py FOLDER IN.pt OUT.pt``.
It imports only torch and transformers (never alignkit, which follows the
installed 5.x), so the result is what a 4.x user of the export gets.

IN.pt: ``texts`` list[str] (tokenized as the processor does, with special
tokens), ``tokenizers``: more ``(folder, texts)`` pairs to tokenize the same
way; when FOLDER holds a model (``config.json``) also ``input_ids`` Long[1, L]
(HF ids, ``<image>`` repeated P times), ``pixel_values`` Float[1, 3, H, W],
``new_tokens`` int, ``prompt`` + ``image`` (a path) for the processor and
``messages`` for the chat template.

OUT.pt: ``version``, ``log`` (every transformers warning or error while
loading), ``tokenizer_class``, ``text_ids``, ``tokenizer_ids`` (one list per
pair); with a model also
``loading_info`` (missing/unexpected/mismatched keys), ``logits``,
``generated`` (greedy new ids), ``processor_ids``, ``processor_pixels``, ``chat``.
"""
import logging
import os
import sys

import torch
import transformers
from transformers import AutoTokenizer


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(f"{record.name}: {record.getMessage()}")


def main(folder, inp, out):
    data = torch.load(inp, weights_only=True)
    collect = _Collect()
    logging.getLogger("transformers").addHandler(collect)
    transformers.logging.set_verbosity_warning()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    res = dict(version=transformers.__version__, tokenizer_class=type(tokenizer).__name__,
               text_ids=[tokenizer(t)["input_ids"] for t in data["texts"]], tokenizer_ids=[])
    for other, texts in data.get("tokenizers", []):
        tok = AutoTokenizer.from_pretrained(other)
        res["tokenizer_ids"].append([tok(t)["input_ids"] for t in texts])
    if os.path.isfile(os.path.join(folder, "config.json")):
        res.update(_model(folder, data))
    res["log"] = collect.records
    torch.save(res, out)


def _model(folder, data):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dtype_kw = {"torch_dtype" if transformers.__version__.startswith("4.") else "dtype": torch.float32}
    model, info = LlavaForConditionalGeneration.from_pretrained(folder, output_loading_info=True, **dtype_kw)
    model.eval()
    processor = AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = model(input_ids=data["input_ids"], pixel_values=data["pixel_values"]).logits
        generated = model.generate(input_ids=data["input_ids"], pixel_values=data["pixel_values"], do_sample=False,
                                   max_new_tokens=data["new_tokens"])
    enc = processor(images=Image.open(data["image"]).convert("RGB"), text=data["prompt"], return_tensors="pt")
    return dict(
        loading_info={k: sorted(map(str, v)) for k, v in info.items()},
        image_processor_class=type(processor.image_processor).__name__,
        logits=logits,
        generated=generated[0, data["input_ids"].shape[1]:],
        processor_ids=enc["input_ids"][0],
        processor_pixels=enc["pixel_values"],
        chat=[processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in data["messages"]],
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
