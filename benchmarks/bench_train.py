"""Training throughput and peak memory of EmoLA's recipe (TRL SFTTrainer + LoRA + EmolaDataCollator).

CPU: the tiny and a small random EmoLA on synthetic FABA data, each in a fresh process (so its peak RSS is its own),
with 1 and 2 torch threads, timed after 2 warm-up steps. Also prints the trainable-parameter count of the 7B
recipe, counted on the meta device (nothing allocated): LoRA r=128 on every LM linear + both projectors.
GPU (when torch.cuda.is_available()): the 7B recipe on random weights: bf16, gradient checkpointing, LoRA r=128,
577 image+prior tokens plus 320 text tokens per sample, samples/s and torch.cuda.max_memory_allocated.

    python benchmarks/bench_train.py [--steps 12] [--batch 4] [--skip-cpu] [--gpu-batch 16]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time

import torch

CONFIGS = {
    # build_tiny_emola keyword arguments
    "tiny": dict(hidden_size=32, num_hidden_layers=2, vision_hidden_size=32, image_size=28),
    "small": dict(hidden_size=256, num_hidden_layers=4, vision_hidden_size=128, image_size=112, vocab_size=1000),
}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_run(name: str, threads: int, steps: int, batch: int, queue) -> None:
    torch.set_num_threads(threads)
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from transformers_emola.data import assistant_answers, load_faba_instruct
    from transformers_emola.synthetic import write_synthetic_faba
    from transformers_emola import build_tiny_emola
    from transformers_emola.training import EmolaSFTConfig, build_lora_config, build_trainer

    config = CONFIGS[name]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_faba(tmp, num_train=max(32, batch * 4), num_eval=0, image_size=config["image_size"],
                                     tasks=["au"])
        dataset = load_faba_instruct(paths["train_au"], tmp, split="train")
        model, processor = build_tiny_emola(texts=assistant_answers(dataset), **config)
        args = EmolaSFTConfig(output_dir=tmp, use_cpu=True, bf16=False, report_to=[], max_steps=steps + 2,
                              per_device_train_batch_size=batch, activation_checkpointing=False, save_strategy="no",
                              disable_tqdm=True, logging_steps=10_000, dataloader_num_workers=0)
        marks: list[float] = []

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                marks.append(time.perf_counter())

        trainer = build_trainer(model, processor, dataset, args, peft_config=build_lora_config(model, r=16, lora_alpha=32),
                                callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # keep the table readable
        trainer.train()
        seconds = marks[-1] - marks[1]  # steps 3..N: the warm-up steps excluded
        tokens = int(trainer.data_collator([dataset[i] for i in range(batch)])["attention_mask"].sum()) / batch
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
    queue.put({
        "config": name, "threads": threads, "steps": steps, "batch": batch,
        "samples_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps,
        "peak_rss_mib": peak_rss_mib(),
        "params_m": total / 1e6, "trainable_m": trainable / 1e6, "tokens_per_sample": tokens,
    })


def cpu_benchmarks(steps: int, batch: int) -> list[dict]:
    context = mp.get_context("spawn")
    results = []
    for name in CONFIGS:
        for threads in (1, 2):
            queue = context.Queue()
            process = context.Process(target=_cpu_run, args=(name, threads, steps, batch, queue))
            process.start()
            results.append(queue.get())
            process.join()
    return results


def recipe_parameter_counts() -> dict:
    """Trainable parameters of the 7B recipe, counted on the meta device."""
    from peft import get_peft_model

    from transformers_emola import EmolaConfig, EmolaForConditionalGeneration
    from transformers_emola.training import build_lora_config

    with torch.device("meta"):
        model = EmolaForConditionalGeneration(EmolaConfig())
    total = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, build_lora_config(model))
    counts = {"total": total, "lora": 0, "multi_modal_projector": 0, "facial_prior_projector": 0}
    for name, parameter in peft_model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = "lora" if "lora_" in name else next(k for k in counts if k in name)
        counts[key] += parameter.numel()
    counts["trainable"] = counts["lora"] + counts["multi_modal_projector"] + counts["facial_prior_projector"]
    return counts


def gpu_benchmark(batch: int, steps: int, text_tokens: int = 320, config=None, device: str = "cuda") -> dict:
    """The 7B recipe on random weights: one optimizer step per batch, timed after 2 warm-up steps."""
    from peft import get_peft_model

    from transformers_emola import EmolaConfig, EmolaForConditionalGeneration
    from transformers_emola.training import build_lora_config, emola_parameter_groups, freeze_vision_tower

    config = config or EmolaConfig()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = EmolaForConditionalGeneration(config).to(dtype)
    freeze_vision_tower(model)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, build_lora_config(model))
    optimizer = torch.optim.AdamW(emola_parameter_groups(model, 1e-4, mm_projector_lr=2e-5), lr=1e-4)
    vocab = min(32000, config.image_token_id)  # ordinary text ids lie below the placeholders
    image_tokens = config.image_seq_length
    prompt = torch.randint(0, vocab, (batch, 40), device=device)
    answer = torch.randint(0, vocab, (batch, text_tokens - 40), device=device)
    placeholders = torch.tensor([config.image_token_id] * image_tokens + [config.facial_prior_token_id], device=device)
    input_ids = torch.cat([prompt[:, :1], placeholders.expand(batch, -1), prompt[:, 1:], answer], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -answer.shape[1]:] = answer
    size = config.vision_config.image_size
    inputs = {
        "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
        "pixel_values": torch.randn(batch, 3, size, size, device=device, dtype=dtype),
        "facial_priors": torch.rand(batch, config.facial_prior_dim, device=device) * 2 - 1,
    }
    if device != "cuda":  # a smoke run of this code path on CPU
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "seq_len": input_ids.shape[1]}
    model.train()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps + 2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = sum(times[2:])
    return {"device": torch.cuda.get_device_name(), "batch": batch, "seq_len": input_ids.shape[1],
            "samples_per_s": steps * batch / seconds, "step_s": seconds / steps,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed CPU steps (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=4, help="CPU batch size")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--gpu-batch", type=int, default=16, help="7B batch size per GPU (the paper: 16)")
    parser.add_argument("--gpu-steps", type=int, default=5)
    args = parser.parse_args()

    counts = recipe_parameter_counts()
    print("EmoLA-7B recipe, trainable parameters (meta device, nothing allocated):")
    print(f"  LoRA r=128 on every LM linear: {counts['lora'] / 1e6:.1f} M   multimodal projector: "
          f"{counts['multi_modal_projector'] / 1e6:.1f} M   facial-prior projector: "
          f"{counts['facial_prior_projector'] / 1e6:.1f} M")
    print(f"  trainable {counts['trainable'] / 1e6:.1f} M of {counts['total'] / 1e9:.2f} B "
          f"({100 * counts['trainable'] / counts['total']:.1f} %)")

    if not args.skip_cpu:
        print(f"\nCPU, batch {args.batch}, LoRA r=16, {args.steps} timed steps (fresh process per row):")
        print(f"{'config':<7}{'threads':>8}{'params M':>10}{'trainable M':>13}{'tokens/sample':>15}"
              f"{'samples/s':>11}{'ms/step':>9}{'peak RSS MiB':>14}")
        for r in cpu_benchmarks(args.steps, args.batch):
            print(f"{r['config']:<7}{r['threads']:>8}{r['params_m']:>10.2f}{r['trainable_m']:>13.3f}"
                  f"{r['tokens_per_sample']:>15.0f}{r['samples_per_s']:>11.1f}{r['step_ms']:>9.0f}"
                  f"{r['peak_rss_mib']:>14.0f}")

    if torch.cuda.is_available():
        result = gpu_benchmark(args.gpu_batch, args.gpu_steps)
        print(f"\nGPU {result['device']}: EmoLA-7B recipe (bf16, gradient checkpointing, LoRA r=128), batch "
              f"{result['batch']} x {result['seq_len']} tokens: {result['samples_per_s']:.2f} samples/s, "
              f"{result['step_s']:.2f} s/step, peak {result['peak_mem_gib']:.1f} GiB")
    else:
        print("\nNo CUDA device: the 7B numbers print when this runs on a GPU.")


if __name__ == "__main__":
    main()
