"""EmoLA's training recipe: label masking, LoRA targets, optimizer groups, a tiny run, merge + pipeline, resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback, pipeline
from trl import ModelConfig, TrlParser

from transformers_emola import EmolaForConditionalGeneration, EmolaProcessor
from transformers_emola.data import assistant_answers, load_faba_instruct
from transformers_emola.synthetic import write_synthetic_faba
from transformers_emola import build_tiny_emola
from transformers_emola.training import (
    EmolaDataCollator,
    EmolaScriptArguments,
    EmolaSFTConfig,
    build_lora_config,
    build_trainer,
    emola_parameter_groups,
    format_summary,
    language_model_linear_names,
    load_model_and_processor,
    merge_adapter_checkpoint,
    resolve_resume,
    train_emola,
    training_model_card,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices: a second thread only adds synchronisation, which is slow on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faba(tmp_path_factory):
    root = tmp_path_factory.mktemp("faba")
    paths = write_synthetic_faba(root, num_train=24, num_eval=2, seed=0, image_size=32, tasks=["au"])
    dataset = load_faba_instruct(paths["train_au"], root, split="train")
    return root, paths, dataset


def tiny_model(dataset, **kwargs):
    return build_tiny_emola(texts=assistant_answers(dataset), **kwargs)


def tiny_args(output_dir, **overrides):
    values = dict(output_dir=str(output_dir), use_cpu=True, bf16=False, report_to=[], activation_checkpointing=False,
                  per_device_train_batch_size=4, dataloader_num_workers=0, save_strategy="no", disable_tqdm=True,
                  logging_steps=1, seed=7)
    values.update(overrides)
    return EmolaSFTConfig(**values)


def user_turn(text):
    return {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}


def answer_turn(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def test_labels_cover_exactly_the_answers_and_their_eos(faba):
    _, _, dataset = faba
    model, processor = tiny_model(dataset)
    tokenizer = processor.tokenizer
    long_row = {**dataset[0], "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        user_turn("What AUs are conveyed by this face?"), answer_turn("AU12 and AU6."),
        {"role": "user", "content": [{"type": "text", "text": "And the emotion?"}]}, answer_turn("Happiness."),
    ]}
    rows = [dataset[1], long_row]
    batch = EmolaDataCollator(processor)(rows)
    assert sorted(batch) == ["attention_mask", "facial_priors", "input_ids", "labels", "pixel_values"]
    torch.testing.assert_close(batch["facial_priors"], torch.tensor([dataset[1]["facial_priors"],
                                                                     dataset[0]["facial_priors"]]))
    expected_answers = [[dataset[1]["messages"][1]["content"][0]["text"]], ["AU12 and AU6.", "Happiness."]]
    for row in range(2):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        trained = labels != -100
        assert torch.equal(labels[trained], ids[trained])
        # the trained tokens are exactly each answer (with the space that follows "ASSISTANT:") and its </s>,
        # one contiguous span per assistant turn, each right after the "ASSISTANT:" token
        positions = trained.nonzero().flatten().tolist()
        spans, start = [], positions[0]
        for previous, current in zip(positions, positions[1:] + [None]):
            if current != previous + 1:
                spans.append((start, previous + 1))
                start = current
        assert len(spans) == len(expected_answers[row])
        for (begin, end), text in zip(spans, expected_answers[row]):
            assert tokenizer.decode(ids[begin:end]).strip() == text + "</s>"
            assert tokenizer.decode(ids[:begin]).endswith("ASSISTANT:")
        # never the image tokens, the prior token, the prompt or the (right) padding
        assert not trained[ids == processor.image_token_id].any()
        assert not trained[ids == processor.facial_prior_token_id].any()
        assert int((ids == processor.facial_prior_token_id).sum()) == 1
        assert not trained[mask == 0].any() and mask[: int(mask.sum())].all()
        prompt_end = int(torch.nonzero(trained)[0])
        assert tokenizer.decode(ids[:prompt_end]).rstrip().endswith("ASSISTANT:")
    # the LLaVA baseline: no prior token, no priors, same answer labels
    _, baseline_processor = tiny_model(dataset, use_facial_prior=False)
    baseline = EmolaDataCollator(baseline_processor)([dataset[1]])
    assert "facial_priors" not in baseline
    assert torch.equal(baseline["input_ids"][0][baseline["labels"][0] != -100],
                       batch["input_ids"][0][batch["labels"][0] != -100])
    with pytest.raises(ValueError, match="cuts through the image tokens"):
        EmolaDataCollator(processor, max_length=20)(rows)


def test_lora_targets_exactly_the_language_model_linears(faba):
    _, _, dataset = faba
    for use_prior in (True, False):
        model, _ = tiny_model(dataset, use_facial_prior=use_prior)
        config = build_lora_config(model)
        assert (config.r, config.lora_alpha, config.lora_dropout) == (128, 256, 0.05)
        expected = set(language_model_linear_names(model))
        assert len(expected) == 2 * 7  # q, k, v, o, gate, up, down in both layers
        peft_model = get_peft_model(model, config)
        adapted = {name.removeprefix("base_model.model.") for name, module in peft_model.named_modules()
                   if hasattr(module, "lora_A") and len(module.lora_A)}
        assert adapted == expected
        trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
        assert not any("vision_tower" in name or "lm_head" in name or "embed_tokens" in name for name in trainable)
        projectors = {name.split(".modules_to_save")[0].split(".")[-1] for name in trainable if "modules_to_save" in name}
        assert projectors == ({"multi_modal_projector", "facial_prior_projector"} if use_prior
                              else {"multi_modal_projector"})
        assert all("lora_" in name or "modules_to_save" in name for name in trainable)


def test_optimizer_groups_have_the_paper_learning_rates(faba, tmp_path):
    _, _, dataset = faba
    model, processor = tiny_model(dataset)
    trainer = build_trainer(model, processor, dataset, tiny_args(tmp_path, max_steps=1),
                            peft_config=build_lora_config(model, r=4, lora_alpha=8))
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert {name: g["lr"] for name, g in groups.items()} == {
        "language_model.no_decay": 1e-4, "multi_modal_projector.no_decay": 2e-5, "facial_prior_projector.no_decay": 1e-4}
    members = {name: {names[id(p)] for p in g["params"]} for name, g in groups.items()}
    assert members["language_model.no_decay"] == {n for n, p in trainer.model.named_parameters()
                                                  if p.requires_grad and "lora_" in n}
    for part in ("multi_modal_projector", "facial_prior_projector"):
        assert members[f"{part}.no_decay"] == {n for n, p in trainer.model.named_parameters()
                                               if p.requires_grad and f"{part}.modules_to_save" in n}
    all_members = [n for g in members.values() for n in g]
    assert sorted(all_members) == sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad)
    # weight decay splits each part into decayed weights and undecayed biases
    decayed = emola_parameter_groups(trainer.model, 1e-3, mm_projector_lr=1e-5, weight_decay=0.1,
                                     decay_parameter_names=trainer.get_decay_parameter_names(trainer.model))
    by_name = {g["name"]: (g["lr"], g["weight_decay"], len(g["params"])) for g in decayed}
    assert by_name["multi_modal_projector"] == (1e-5, 0.1, 2) and by_name["multi_modal_projector.no_decay"] == (
        1e-5, 0.0, 2)


def load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(faba, tmp_path_factory):
    """The documented CPU recipe: examples/tiny_emola.py saves the tiny model, tiny_cpu.yaml fine-tunes it."""
    root, paths, _ = faba
    run_dir = tmp_path_factory.mktemp("run")
    tiny_dir = load_example("tiny_emola").main(["--output_dir", str(run_dir / "tiny-emola"), "--annotations",
                                                str(paths["train_au"]), "--seed", "1"])
    output_dir = run_dir / "emola-tiny-au"
    parser = TrlParser((EmolaScriptArguments, EmolaSFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config([
        "--config", str(REPO / "examples" / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", tiny_dir,
        "--train_annotations", str(paths["train_au"]), "--image_root", str(root),
        "--output_dir", str(output_dir), "--max_steps", "30", "--save_strategy", "no", "--disable_tqdm", "true",
    ])
    summary = train_emola(script_args, training_args, model_args)
    return summary, output_dir, tiny_dir


def test_tiny_recipe_learns(tiny_run):
    summary, output_dir, tiny_dir = tiny_run
    assert summary["global_step"] == 30 and summary["train_samples"] == 24
    losses = [e["loss"] for e in summary["trainer"].state.log_history if "loss" in e]
    assert len(losses) == 6  # logging_steps 5
    assert losses[-1] < losses[0] - 0.8 and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert summary["train_samples_per_second"] > 0 and summary["peak_memory_bytes"] > 0
    assert (output_dir / "adapter_model.safetensors").is_file() and (output_dir / "adapter_config.json").is_file()
    card = (output_dir / "README.md").read_text()
    assert f"base_model:\n- {tiny_dir}" in card and "| lora_r | 16 |" in card and "PEFT LoRA" in card
    assert "steps: 30   samples: 24" in format_summary(summary)


def test_emola_train_is_the_example_script(tiny_run, faba, tmp_path, capsys):
    """`emola train` parses the dataclasses of examples/sft_emola.py with TrlParser: same options, same run."""
    from safetensors.torch import load_file

    from transformers_emola.cli import main as emola

    root, paths, _ = faba
    common = ["--config", str(REPO / "examples" / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", tiny_run[2],
              "--train_annotations", str(paths["train_au"]), "--image-root", str(root), "--max_steps", "2",
              "--save_strategy", "no", "--disable_tqdm", "true", "--merge", "false", "--logging_steps", "1"]
    assert emola(["train", *common, "--output_dir", str(tmp_path / "cli")]) == 0
    assert "==== EmoLA training summary ====" in capsys.readouterr().out
    load_example("sft_emola").main([*common, "--output_dir", str(tmp_path / "script")])
    by_cli = load_file(tmp_path / "cli" / "adapter_model.safetensors")
    by_script = load_file(tmp_path / "script" / "adapter_model.safetensors")
    assert by_cli.keys() == by_script.keys() and len(by_cli) > 0
    for name in by_cli:
        assert torch.equal(by_cli[name], by_script[name]), name
    assert not (tmp_path / "cli" / "merged").exists()  # --merge false, given after the recipe's merge: true


def test_merged_checkpoint_loads_and_generates_through_pipeline(tiny_run, faba):
    summary, output_dir, _ = tiny_run
    _, _, dataset = faba
    merged_dir = output_dir / "merged"
    assert (merged_dir / "model.safetensors").is_file()
    model = AutoModelForImageTextToText.from_pretrained(merged_dir)
    processor = AutoProcessor.from_pretrained(merged_dir)
    assert isinstance(model, EmolaForConditionalGeneration) and isinstance(processor, EmolaProcessor)
    # the merged weights compute what the trained adapter computed
    collator = EmolaDataCollator(processor)
    batch = collator([dataset[0], dataset[1]])
    trained = summary["trainer"].model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        torch.testing.assert_close(model(**inputs).logits, trained(**inputs).logits, atol=1e-4, rtol=1e-4)
    # and generate through the standard pipeline
    image = dataset[0]["images"][0]
    prior = np.float32([dataset[0]["facial_priors"]])

    class Precomputed:
        def __call__(self, images):
            return prior

        def to_dict(self):
            return {"backend": "precomputed-test"}

    pipe = pipeline("image-text-to-text", model=str(merged_dir))
    pipe.processor.set_facial_prior_extractor(Precomputed())
    chat = [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "What AUs are conveyed by this face?"}]}]
    out = pipe(text=chat, generate_kwargs={"max_new_tokens": 12, "do_sample": False}, return_full_text=False)
    prompt = processor.apply_chat_template([user_turn("What AUs are conveyed by this face?")],
                                           add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, facial_priors=prior, return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    expected = processor.post_process_image_text_to_text(ids)[0]
    assert out[0]["generated_text"].strip() == expected and len(expected.split()) >= 2


class StepRecorder(TrainerCallback):
    """The step a run starts from and the optimizer steps it executes."""

    def __init__(self):
        self.start, self.steps = None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def record_steps(monkeypatch) -> StepRecorder:
    """Add a StepRecorder to the trainer `emola train` builds (the recipe is otherwise untouched)."""
    from transformers_emola.training import recipe

    recorder, build = StepRecorder(), build_trainer  # the original, however often this is called

    def build_recording(*args, callbacks=None, **kwargs):
        return build(*args, callbacks=[*(callbacks or []), recorder], **kwargs)

    monkeypatch.setattr(recipe, "build_trainer", build_recording)
    return recorder


# examples/sft_emola.py in a child process that SIGKILLs itself once the checkpoint of step argv[1] is on disk.
KILLED_AFTER_CHECKPOINT = """
import os, runpy, signal, sys

from transformers import TrainerCallback
from transformers_emola.training import recipe

kill_step, script, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]


class KillAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):  # called once checkpoint-N is completely written
        if state.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)


build = recipe.build_trainer
recipe.build_trainer = lambda *a, callbacks=None, **k: build(*a, callbacks=[*(callbacks or []), KillAfterCheckpoint()],
                                                             **k)
sys.argv = [script, *argv]
runpy.run_path(script, run_name="__main__")
"""


def test_killed_run_resumes_from_its_checkpoint_to_the_weights_of_an_uninterrupted_one(tiny_run, faba, tmp_path,
                                                                                       monkeypatch):
    """The documented path: a run killed after checkpoint-4, then `emola train --resume_from_checkpoint true`. The
    resumed run starts at step 4, executes only steps 5-8 (a restart from scratch would execute 1-8 and, with the
    same seed, end with the same weights: the step count is what tells them apart) and ends bit for bit where an
    uninterrupted run ends."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from transformers_emola.cli import main as emola

    root, paths, _ = faba
    recipe = ["--config", str(REPO / "examples" / "recipes" / "tiny_cpu.yaml"), "--model_name_or_path", tiny_run[2],
              "--train_annotations", str(paths["train_au"]), "--image_root", str(root), "--max_steps", "8",
              "--save_strategy", "steps", "--save_steps", "4", "--logging_steps", "1", "--merge", "false",
              "--disable_tqdm", "true"]
    killed = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", KILLED_AFTER_CHECKPOINT, "4", str(REPO / "examples/sft_emola.py"),
                            *recipe, "--output_dir", str(killed)], capture_output=True, text=True, timeout=600)
    assert child.returncode == -9, child.stderr[-3000:]  # SIGKILL
    assert [p.name for p in killed.glob("checkpoint-*")] == ["checkpoint-4"]
    assert not (killed / "adapter_model.safetensors").exists()  # the run never reached its end

    uninterrupted = record_steps(monkeypatch)
    assert emola(["train", *recipe, "--output_dir", str(tmp_path / "uninterrupted")]) == 0
    assert (uninterrupted.start, uninterrupted.steps) == (0, [1, 2, 3, 4, 5, 6, 7, 8])

    resumed = record_steps(monkeypatch)
    assert emola(["train", *recipe, "--output_dir", str(killed), "--resume_from_checkpoint", "true"]) == 0
    assert (resumed.start, resumed.steps) == (4, [5, 6, 7, 8])

    expected = load_file(tmp_path / "uninterrupted" / "adapter_model.safetensors")
    actual = load_file(killed / "adapter_model.safetensors")
    assert actual.keys() == expected.keys() and len(expected) > 0
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    # with no checkpoint in output_dir, `true` starts a new run (and says so in the log)
    assert resolve_resume("true", str(tmp_path / "empty")) is None


def test_starts_from_an_hf_llava_checkpoint(faba, tmp_path):
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    root, paths, dataset = faba
    emola, emola_processor = tiny_model(dataset)
    llava_config = LlavaConfig(vision_config=emola.config.vision_config, text_config=emola.config.text_config,
                               image_token_index=emola.config.image_token_id,
                               image_seq_length=emola.config.image_seq_length)
    torch.manual_seed(1)
    llava = LlavaForConditionalGeneration(llava_config)
    llava_dir = tmp_path / "llava"
    llava.save_pretrained(llava_dir)
    LlavaProcessor(image_processor=emola_processor.image_processor, tokenizer=emola_processor.tokenizer,
                   patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(llava_dir)  # as llava-hf/llava-1.5-7b-hf
    llava_state = llava.state_dict()
    # from_llava, and the direct load used for 4-bit / ZeRO-3 (legacy llava-hf key layout), give the same weights
    for direct in (False, True):
        model, processor = load_model_and_processor(str(llava_dir), facial_prior_dim=136,
                                                    facial_prior_backend="face_alignment", direct_llava_load=direct)
        assert isinstance(model, EmolaForConditionalGeneration) and isinstance(processor, EmolaProcessor)
        assert model.config.facial_prior_dim == 136 and model.name_or_path == str(llava_dir)
        assert model.config.facial_prior_token_id == processor.facial_prior_token_id
        state = model.state_dict()
        assert {n for n in state if "facial_prior_projector" not in n} == set(llava_state)
        for name in llava_state:
            assert torch.equal(state[name], llava_state[name]), name
    baseline, baseline_processor = load_model_and_processor(str(llava_dir), use_facial_prior=False)
    assert baseline.model.facial_prior_projector is None and not baseline_processor.use_facial_prior

    # the whole recipe from the LLaVA checkpoint; the adapter merged later (as after QLoRA / ZeRO-3) equals the
    # in-process merge
    output_dir = tmp_path / "emola-from-llava"
    script_args = EmolaScriptArguments(train_annotations=str(paths["train_au"]), image_root=str(root),
                                       facial_prior_backend="face_alignment", merge=True)
    model_args = ModelConfig(model_name_or_path=str(llava_dir), use_peft=True, lora_r=4, lora_alpha=8)
    summary = train_emola(script_args, tiny_args(output_dir, max_steps=2, learning_rate=1e-2), model_args)
    assert summary["global_step"] == 2
    later = merge_adapter_checkpoint(output_dir, tmp_path / "merged-later", dtype=torch.float32)
    in_run = AutoModelForImageTextToText.from_pretrained(output_dir / "merged")
    merged_later = AutoModelForImageTextToText.from_pretrained(later)
    assert not torch.equal(in_run.model.facial_prior_projector.linear_2.weight,
                           model.model.facial_prior_projector.linear_2.weight)  # trained
    for name, tensor in in_run.state_dict().items():
        torch.testing.assert_close(merged_later.state_dict()[name], tensor, msg=name)

    # continuing from an EmoLA checkpoint keeps its prior projector; the baseline needs a matching checkpoint
    reloaded, _ = load_model_and_processor(str(output_dir / "merged"))
    assert torch.equal(reloaded.model.facial_prior_projector.linear_1.weight,
                       in_run.model.facial_prior_projector.linear_1.weight)
    with pytest.raises(ValueError, match="use_facial_prior"):
        load_model_and_processor(str(output_dir / "merged"), use_facial_prior=False)


def test_training_card_is_the_packaged_template_with_the_run_details():
    card = str(training_model_card("me/emola-7b-au", "llava-hf/llava-1.5-7b-hf", "au",
                                   facial_prior_backend="insightface_2d106", hyperparameters={"learning_rate": 1e-4}))
    assert card.startswith("---") and "{{" not in card and '"me/emola-7b-au"' in card
    assert "| learning_rate | 0.0001 |" in card and "- trl" in card
    assert "`insightface_2d106` landmarks (212 numbers)" in card
    baseline = str(training_model_card("me/llava-lora-au", "llava-hf/llava-1.5-7b-hf", "au", use_facial_prior=False))
    assert "LLaVA-LoRA baseline" in baseline and "facial prior expert" not in baseline


def test_a_model_built_in_memory_is_trained_by_the_same_recipe(faba, tmp_path):
    root, paths, dataset = faba
    model, processor = tiny_model(dataset)
    script_args = EmolaScriptArguments(train_annotations=str(paths["train_au"]), image_root=str(root),
                                       facial_prior_backend="face_alignment")
    summary = train_emola(script_args, tiny_args(tmp_path / "run", max_steps=2), ModelConfig(use_peft=False),
                          model=model, processor=processor)
    assert summary["global_step"] == 2 and summary["trainer"].model is model  # full fine-tuning, no adapter
    assert json.loads((tmp_path / "run" / "emola_base.json").read_text())["base_model"] is None
    assert "built in memory" in (tmp_path / "run" / "README.md").read_text()
    with pytest.raises(ValueError, match="built in memory"):
        merge_adapter_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match="model_name_or_path is required"):
        train_emola(script_args, tiny_args(tmp_path / "other", max_steps=1))


def test_sft_config_keeps_trls_activation_checkpointing_without_the_deprecated_name(tmp_path):
    """TRL defaults `gradient_checkpointing=True`, a name transformers 5.23+ deprecates with a FutureWarning on every
    config built; EmolaSFTConfig sets the same default under the current name, and the old name still works."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        default = EmolaSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
        off = EmolaSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], activation_checkpointing=False)
    assert default.activation_checkpointing is True and default.gradient_checkpointing is True
    assert off.activation_checkpointing is False and off.gradient_checkpointing is False
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):
        old = EmolaSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], gradient_checkpointing=False)
    assert old.activation_checkpointing is False
