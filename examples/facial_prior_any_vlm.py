# Copyright 2024 the transformers-emola authors. Apache-2.0.
"""EmoLA's facial prior on any VLM, shown on tiny random Qwen2.5-VL and Idefics3 models (offline, CPU, seconds).

    python examples/facial_prior_any_vlm.py [--output_dir DIR]

For each base, the model is built from a configuration written here and the inputs are written by hand (token ids
with the image's placeholders, the `<facial_prior>` token right after the image's block, random pixels), so every
number the script prints comes from the base family's own code plus `add_facial_prior`:

- `no prior token = base`: without the prior token, EmoLA's logits are the base model's, bit for bit;
- `before prior: max |diff|`: changing only the prior leaves every position before its token unchanged (0);
- `from prior on: min |diff|`: ... and changes every position from its token on (> 0);
- `reload: same weights / same logits`: save -> `AutoModelForImageTextToText.from_pretrained` gives the same model;
- `generate`: greedy tokens with `facial_priors`; its first step scores are the forward's last logits, and another
  prior changes them (the prior is read at prefill; later steps run from the cache).

The script exits with status 1 if a guarantee does not hold. docs/facial_prior_any_vlm.md explains the API.
"""

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForImageTextToText,
    HfArgumentParser,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

import transformers_emola  # registers the EmoLA families with the Auto classes
from transformers_emola import add_facial_prior

VOCAB = 200
PRIOR = 199  # the id chosen for <facial_prior>: any id of the vocabulary that the prompts do not otherwise use
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@dataclass
class ScriptArguments:
    output_dir: str | None = field(default=None, metadata={"help": "where to save the EmoLA models (default: a "
                                                                   "temporary folder)"})
    seed: int = field(default=0, metadata={"help": "seed of the random weights, pixels and priors"})


def tiny_qwen2_5_vl() -> tuple[torch.nn.Module, dict, int]:
    """A tiny Qwen2.5-VL, and a prompt `text <|vision_start|> 4 x <|image_pad|> <|vision_end|> <facial_prior> text`
    for one 56 x 56 image (4 x 4 patches of 14 px, merged 2 x 2 into 4 image tokens)."""
    image, vision_start, vision_end = 190, 192, 193
    config = Qwen2_5_VLConfig(
        text_config=dict(TEXT, rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e4}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                           window_size=28, fullatt_block_indexes=[0]),
        image_token_id=image, video_token_id=191, vision_start_token_id=vision_start, vision_end_token_id=vision_end,
    )
    ids = [5, 6, vision_start, image, image, image, image, vision_end, PRIOR, 7, 8, 9]
    inputs = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "mm_token_type_ids": torch.tensor([[int(token == image) for token in ids]]),  # M-RoPE's image positions
        "pixel_values": torch.randn(16, 3 * 2 * 14 * 14),  # 16 patches of 2 frames x 14 x 14 px x RGB
        "image_grid_thw": torch.tensor([[1, 4, 4]]),
    }
    return Qwen2_5_VLForConditionalGeneration(config).eval(), inputs, ids.index(PRIOR)


def tiny_idefics3() -> tuple[torch.nn.Module, dict, int]:
    """A tiny Idefics3 (SmolVLM's architecture), and a prompt `text <fake_token_around_image> 4 x <image>
    <fake_token_around_image> <facial_prior> text` for one 56 x 56 image (16 patches, pixel-shuffled 2 x 2 into 4)."""
    image, around = 190, 191
    config = Idefics3Config(
        text_config=dict(TEXT, model_type="llama"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=56, patch_size=14),
        scale_factor=2, image_token_id=image,
    )
    ids = [5, 6, around, image, image, image, image, around, PRIOR, 7, 8, 9]
    inputs = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values": torch.randn(1, 1, 3, 56, 56),  # (batch, images per sample, RGB, height, width)
        "pixel_attention_mask": torch.ones(1, 1, 56, 56, dtype=torch.bool),
    }
    return Idefics3ForConditionalGeneration(config).eval(), inputs, ids.index(PRIOR)


def without_prior_token(inputs: dict, position: int) -> dict:
    """The same prompt as the base family writes it: the prior token removed from every per-token input."""
    return {key: torch.cat([value[:, :position], value[:, position + 1 :]], dim=1)
            if value.ndim == 2 and value.shape[1] == inputs["input_ids"].shape[1] and key != "pixel_values" else value
            for key, value in inputs.items()}


def in_own_memory(model: torch.nn.Module) -> torch.nn.Module:
    """Loaded weights may sit at unaligned offsets of the checkpoint, where BLAS can round in another order; an
    exact logits comparison gives both models weights in memory of their own."""
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()
    return model


@torch.no_grad()
def check(name: str, build, output_dir: Path, seed: int) -> dict:
    """The guarantees of `add_facial_prior` on the base model `build()` returns."""
    torch.manual_seed(seed)
    base, inputs, position = build()
    plain = without_prior_token(inputs, position)
    base_logits = base(**plain).logits

    model = add_facial_prior(base, facial_prior_dim=136, facial_prior_token_id=PRIOR)
    prior, other_prior = torch.randn(1, 136), torch.randn(1, 136)
    with_prior = model(**inputs, facial_priors=prior).logits
    with_other = model(**inputs, facial_priors=other_prior).logits
    change = (with_prior - with_other).abs().amax(-1)[0]  # per position

    model.save_pretrained(output_dir / name)
    reloaded = AutoModelForImageTextToText.from_pretrained(output_dir / name)
    reloaded_state = reloaded.state_dict()
    same_weights = all(torch.equal(reloaded_state[key], value) for key, value in model.state_dict().items())
    reloaded_logits = in_own_memory(reloaded)(**inputs, facial_priors=prior).logits
    original_logits = in_own_memory(model)(**inputs, facial_priors=prior).logits

    greedy = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True)
    length = inputs["input_ids"].shape[1]
    generated = model.generate(**inputs, facial_priors=prior, **greedy)
    generated_other = model.generate(**inputs, facial_priors=other_prior, **greedy)
    first_step, first_step_other = generated.scores[0][0], generated_other.scores[0][0]
    allowed = torch.isfinite(first_step)  # placeholders (and EOS under min_new_tokens) are masked to -inf
    return {
        "model": type(model).__name__,
        "no prior token = base": torch.equal(model(**plain).logits, base_logits),
        "before prior: max |diff|": change[:position].max().item(),
        "from prior on: min |diff|": change[position:].min().item(),
        "reload: same weights": same_weights and type(reloaded) is type(model),
        "reload: same logits": torch.equal(reloaded_logits, original_logits),
        "generate": generated.sequences[0, length:].tolist(),
        "generate: step 1 = forward": torch.allclose(first_step[allowed], with_prior[0, -1][allowed], atol=1e-6),
        "generate: other prior |diff|": (first_step - first_step_other)[allowed].abs().max().item(),
    }


def holds(result: dict) -> bool:
    return (result["no prior token = base"] and result["before prior: max |diff|"] == 0
            and result["from prior on: min |diff|"] > 0 and result["reload: same weights"]
            and result["reload: same logits"] and len(result["generate"]) == 5
            and result["generate: step 1 = forward"] and result["generate: other prior |diff|"] > 0)


def main(args: ScriptArguments) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as temporary:
        output_dir = Path(args.output_dir or temporary)
        return {name: check(name, build, output_dir, args.seed)
                for name, build in (("qwen2_5_vl", tiny_qwen2_5_vl), ("idefics3", tiny_idefics3))}


if __name__ == "__main__":
    (script_args,) = HfArgumentParser(ScriptArguments).parse_args_into_dataclasses()
    results = main(script_args)
    for name, result in results.items():
        print(f"\n{name}: {result['model']} (transformers_emola {transformers_emola.__version__})")
        for key, value in list(result.items())[1:]:
            print(f"  {key:<30} {value}")
    failed = [name for name, result in results.items() if not holds(result)]
    print("\nall guarantees hold" if not failed else f"\nguarantees broken for {failed}")
    sys.exit(1 if failed else 0)
