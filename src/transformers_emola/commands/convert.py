"""`emola convert`: turn a released EmoLA checkpoint (LoRA + projector files on LLaVA-1.5) into one HF model folder.

Example:
`emola convert --base llava-v1.5-7b --emola llava-v1.5-7b-lora-emola-au --vision-tower clip-vit-large-patch14-336
--output emola-7b-au`
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", required=True,
        help="Local LLaVA-1.5-7B folder: liuhaotian/llava-v1.5-7b or llava-hf/llava-1.5-7b-hf (required).",
    )  # fmt: skip
    parser.add_argument(
        "--emola", required=True,
        help="EmoLA folder: adapter_config.json, adapter_model.{bin,safetensors}, non_lora_trainables.bin, "
        "landmark_feature_projector.bin, config.json (required).",
    )  # fmt: skip
    parser.add_argument("--output", required=True,
                        help="Output folder for the converted model and processor (required).")
    parser.add_argument(
        "--vision-tower", default=None,
        help="CLIP folder (openai/clip-vit-large-patch14-336). Required for the liuhaotian base, which has no tower "
        "(default: the base's own tower).",
    )  # fmt: skip
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder (default: the base model's).")
    parser.add_argument(
        "--dtype", default="float16", choices=("float16", "bfloat16", "float32"),
        help="Output weight dtype (default float16, as the official evaluation).",
    )  # fmt: skip
    parser.add_argument("--max-shard-size", default="5GB", help="Safetensors shard size (default 5GB).")
    parser.add_argument(
        "--facial-prior-backend", default="insightface_2d106",
        help="Extractor the prior projector was trained on (default insightface_2d106, the released checkpoints).",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..convert_emola_original_to_hf import ConversionError, convert_emola_checkpoint

    try:
        summary = convert_emola_checkpoint(
            args.base,
            args.emola,
            args.output,
            vision_tower_path=args.vision_tower,
            tokenizer_path=args.tokenizer,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            facial_prior_backend=args.facial_prior_backend,
        )
    except ConversionError as error:
        print(f"emola convert: error: {error}", file=sys.stderr)
        return 2
    print(f"base layout: {summary.base_layout}")
    print(f"LoRA merged into {len(summary.merged_lora_modules)} weights (scale {summary.lora_scale})")
    print(f"non-LoRA weights replaced: {len(summary.non_lora_keys)}")
    print(f"tokens added: {summary.added_tokens or 'none'}; vocabulary rows: {summary.vocab_size}")
    print(f"saved to {args.output}")
    return 0
