# Copyright 2024 the transformers-emola authors. Apache-2.0.
"""Fine-tune EmoLA (LLaVA-1.5, or another VLM, + facial prior token) on FABA-Instruct with TRL's SFTTrainer and LoRA.

The recipe of Li et al. (ECCV 2024): LoRA r=128/alpha=256 on every linear layer of the language model, the
multimodal projector (lr 2e-5) and the facial-prior projector (lr 1e-4) trained fully, CLIP frozen, loss on the
answers only, 1 epoch, cosine schedule with 3 % warmup, bf16. `emola train` is the same script as a command.

    # the paper's AU model, 4 GPUs with DeepSpeed ZeRO-3
    accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml \
        examples/sft_emola.py --config examples/recipes/emola_au.yaml

    # the same on one 24 GB GPU (QLoRA)
    python examples/sft_emola.py --config examples/recipes/emola_au.yaml --load_in_4bit true \
        --per_device_train_batch_size 4 --gradient_accumulation_steps 16

    # the LLaVA-LoRA baseline of the ablations
    python examples/sft_emola.py --config examples/recipes/emola_au.yaml --use_facial_prior false

    # the facial prior on another base (Qwen2.5-VL, Idefics3/SmolVLM, Gemma 3): LoRA on its language model, its own
    # projector and the prior projector trained in full (docs/facial_prior_any_vlm.md)
    python examples/sft_emola.py --config examples/recipes/emola_au.yaml --system_prompt auto \
        --model_name_or_path HuggingFaceTB/SmolVLM-256M-Instruct --add_facial_prior true \
        --output_dir checkpoints/emola-smolvlm-256m-au

    # offline, CPU, under a minute: a tiny random EmoLA on synthetic faces
    emola synth --out data/synthetic --num-train 64 --num-eval 8 --image-size 64 --tasks au
    python examples/tiny_emola.py --output_dir outputs/tiny-emola \
        --annotations data/synthetic/FABAInstruct/train/train_au_anno.json
    python examples/sft_emola.py --config examples/recipes/tiny_cpu.yaml

Resume an interrupted run with `--resume_from_checkpoint true` (the last checkpoint in output_dir) or a path.
See docs/fine_tuning.md.
"""

from trl import ModelConfig, TrlParser

from transformers_emola.training import EmolaScriptArguments, EmolaSFTConfig, format_summary, train_emola


def main(argv=None):
    parser = TrlParser((EmolaScriptArguments, EmolaSFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    summary = train_emola(script_args, training_args, model_args)
    if summary["trainer"].is_world_process_zero():
        print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main()
