"""EmoLA's cost over LLaVA-1.5 at identical size and inputs: forward and 32-token greedy generate.

Both models share every weight (EmoLA is built with `from_llava`), so the only difference is the facial-prior
projector and its one extra token. Prints medians and the EmoLA / LLaVA ratio (target <= 1.05).

    python benchmarks/bench_overhead.py [--hidden 256 --layers 4 --image-size 112 --batch 4 --repeats 9]
    python benchmarks/bench_overhead.py --threads 1 --clock cpu   # on a machine other jobs share

`--clock cpu` times the process's CPU seconds (`time.process_time`): with one thread it counts the work done, not
the time spent waiting for a core, so the ratio holds on a loaded machine where wall-clock medians swing by 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image
from transformers import LlavaConfig, LlavaForConditionalGeneration

from transformers_emola import EmolaForConditionalGeneration
from transformers_emola import build_tiny_emola


def median_seconds(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: perf_counter; cpu: process CPU time (use with --threads 1 on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    emola_ref, processor = build_tiny_emola(
        image_size=args.image_size, hidden_size=args.hidden, vision_hidden_size=args.hidden,
        num_hidden_layers=args.layers,
    )
    config = emola_ref.config
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=config.vision_config.to_dict(), text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id, image_seq_length=config.image_seq_length,
    )).eval()
    emola = EmolaForConditionalGeneration.from_llava(
        llava, facial_prior_dim=136, facial_prior_token_id=config.facial_prior_token_id).eval()
    # Same decoding rules for both: EmoLA never generates its placeholders, so LLaVA is given the same suppression
    # (otherwise the comparison would time a logits processor, not the facial prior).
    llava.generation_config.suppress_tokens = list(emola.generation_config.suppress_tokens)

    prompt = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What AUs are conveyed by this face?"}]}], add_generation_prompt=True)
    generator = torch.Generator().manual_seed(0)
    pil = [Image.fromarray((torch.rand(args.image_size, args.image_size, 3, generator=generator) * 255).byte().numpy())
           for _ in range(args.batch)]
    priors = torch.rand(args.batch, 136, generator=generator)
    emola_inputs = processor(images=pil, text=[prompt] * args.batch, facial_priors=priors, return_tensors="pt")
    processor.use_facial_prior = False
    llava_inputs = processor(images=pil, text=[prompt] * args.batch, return_tensors="pt")
    processor.use_facial_prior = True

    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    rows = []
    with torch.inference_mode():
        for name, run_llava, run_emola in [
            ("forward", lambda: llava(**llava_inputs), lambda: emola(**emola_inputs)),
            (f"generate {args.new_tokens} tokens", lambda: llava.generate(**llava_inputs, **gen),
             lambda: emola.generate(**emola_inputs, **gen)),
        ]:
            # interleave the two so drifts in machine load hit both equally
            t_llava, t_emola = [], []
            for _ in range(args.repeats):
                t_llava.append(median_seconds(run_llava, 1, clock))
                t_emola.append(median_seconds(run_emola, 1, clock))
            rows.append((name, statistics.median(t_llava), statistics.median(t_emola)))

    seq = emola_inputs["input_ids"].shape[1]
    print(f"config: hidden={args.hidden} layers={args.layers} image={args.image_size}px batch={args.batch} "
          f"prompt={seq} tokens (LLaVA {seq - 1}), threads={torch.get_num_threads()}, repeats={args.repeats}, clock={args.clock}")
    print(f"{'measure':<22}{'LLaVA (ms)':>12}{'EmoLA (ms)':>12}{'ratio':>8}")
    for name, t_llava, t_emola in rows:
        print(f"{name:<22}{t_llava * 1e3:>12.2f}{t_emola * 1e3:>12.2f}{t_emola / t_llava:>8.3f}")


if __name__ == "__main__":
    main()
