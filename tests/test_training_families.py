"""EmoLA's training recipe on the other base families (issue 16): tiny random Qwen2.5-VL, Idefics3 and Gemma 3.

From a saved *base* checkpoint, `examples/sft_emola.py --add_facial_prior true` builds the EmoLA variant, trains LoRA
on the language model's linears plus the family's projector and the prior projector (each at its learning rate),
keeps everything else bit for bit, and leaves an adapter and a merged checkpoint that reproduce the trained model.
The labels cover exactly the answers in each family's template, official ones included (they lack
`{% generation %}` markers). LLaVA is covered by tests/test_training.py.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from trl import ModelConfig, TrlParser
from trl.chat_template_utils import get_training_chat_template

import trl
from transformers_emola import add_facial_prior, add_facial_prior_token
from transformers_emola.data import load_faba_instruct
from transformers_emola.families import facial_prior_family
from transformers_emola.synthetic import write_synthetic_faba
from transformers_emola.testing_utils import build_tiny_vlm
from transformers_emola.training import (
    EmolaDataCollator,
    EmolaScriptArguments,
    EmolaSFTConfig,
    answer_spans,
    language_model_linear_names,
    load_model_and_processor,
    merge_adapter_checkpoint,
    train_emola,
)

FAMILIES = ("qwen2_5_vl", "idefics3", "gemma3")
# Each family's official chat template, as TRL ships it (byte-identical to the Hub's), and what ends a turn in it.
OFFICIAL_TEMPLATES = {"qwen2_5_vl": "qwen2_5_vl", "idefics3": "smolvlm", "gemma3": "gemma3"}
END_OF_TURN = {"qwen2_5_vl": "<|im_end|>", "idefics3": "<end_of_utterance>", "gemma3": "<end_of_turn>"}
STEPS, LEARNING_RATE, PROJECTOR_LR = 24, 1e-2, 2e-3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only adds synchronisation on a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faba(tmp_path_factory):
    root = tmp_path_factory.mktemp("faba")
    # the emotion answers are the shorter ones: fewer tokens per step
    paths = write_synthetic_faba(root, num_train=8, num_eval=0, seed=0, image_size=32, tasks=["emotion"])
    return root, paths["train_emotion"], load_faba_instruct(paths["train_emotion"], root, split="train")


def official_template(family):
    return (Path(trl.__file__).parent / "chat_templates" / f"{OFFICIAL_TEMPLATES[family]}.jinja").read_text()


def conversation(answers=("The dominant emotion is happiness.", "The lip corners are pulled up.")):
    first, second = answers
    return [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What emotion is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": first}]},
        {"role": "user", "content": [{"type": "text", "text": "Why?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": second}]},
    ]


def trained_spans(labels):
    """The contiguous runs of trained positions, as (start, end)."""
    positions = (labels != -100).nonzero().flatten().tolist()
    spans, start = [], None
    for previous, current in zip([None] + positions, positions + [None]):
        if current is None or previous is None or current != previous + 1:
            if previous is not None:
                spans.append((start, previous + 1))
            start = current
    return spans


# ------------------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("official", [False, True], ids=["tiny-template", "official-template"])
@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_exactly_each_answer_and_its_end_of_turn(family, official):
    """Neither the official templates nor the tiny ones mark the answers: the collator finds them by rendering, and
    for the official templates gets exactly the tokens of TRL's {% generation %}-marked training variants."""
    _, base_processor = build_tiny_vlm(family)
    if official:
        base_processor.chat_template = official_template(family)
    processor = add_facial_prior_token(base_processor)
    tokenizer = processor.tokenizer
    images = [Image.new("RGB", (40, 48), (200, 150, 120)), Image.new("RGB", (56, 56), (90, 60, 40))]
    answers = [("The dominant emotion is happiness.", "The lip corners are pulled up."), ("Sadness.", "Brows down.")]
    rows = [{"images": [image], "facial_priors": np.full(136, index, np.float32), "messages": conversation(pair)}
            for index, (image, pair) in enumerate(zip(images, answers))]
    rows[1]["messages"] = rows[1]["messages"][1:3]  # one turn, no system prompt: padded in the batch
    batch = EmolaDataCollator(processor)(rows)
    for row, expected in enumerate([answers[0], answers[1][:1]]):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        trained = labels != -100
        assert torch.equal(labels[trained], ids[trained])
        spans = trained_spans(labels)
        assert len(spans) == len(expected)
        for (begin, end), answer in zip(spans, expected):
            text = tokenizer.decode(ids[begin:end])
            # the answer (SmolVLM's with the space after "Assistant:"), the token that ends the turn (the model
            # learns to stop) and the line break after it
            assert text.removeprefix(" ") == answer + END_OF_TURN[family] + "\n", text
            assert tokenizer.decode(ids[:begin]).rstrip().endswith(("assistant", "Assistant:", "model"))
        # never an image, prior, prompt or padding token
        assert int((ids == processor.facial_prior_token_id).sum()) == 1
        assert not trained[ids == processor.facial_prior_token_id].any()
        assert not trained[ids == processor.image_token_id].any()
        assert not trained[mask == 0].any()
    if official:
        # TRL's training variant of the official template marks the answers: the same labels through the markers
        marked = add_facial_prior_token(base_processor)
        marked.chat_template = get_training_chat_template(processor)
        assert "generation" in marked.chat_template
        reference = EmolaDataCollator(marked)(rows)
        assert torch.equal(reference["input_ids"], batch["input_ids"])
        assert torch.equal(reference["labels"], batch["labels"])
    # the base processor (the no-prior baseline) trains on the same answer tokens
    baseline = EmolaDataCollator(base_processor)([{k: v for k, v in rows[0].items() if k != "facial_priors"}])
    assert "facial_priors" not in baseline
    assert torch.equal(baseline["input_ids"][0][baseline["labels"][0] != -100],
                       batch["input_ids"][0][batch["labels"][0] != -100])


def test_a_template_whose_prompt_is_not_a_prefix_is_refused():
    _, base_processor = build_tiny_vlm("qwen2_5_vl")
    processor = add_facial_prior_token(base_processor)
    template = processor.chat_template
    processor.chat_template = template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>model\\n'")
    assert processor.chat_template != template  # the generation prompt no longer opens the assistant turn
    with pytest.raises(ValueError, match=r"prefix of its continuation \(assistant turn 2\).*generation"):
        answer_spans(processor, conversation())


# ------------------------------------------------------------------------------------------------------ the run
class Snapshot(TrainerCallback):
    """Keeps the trained PEFT model and the optimizer's groups as training ends (`--merge` then folds the adapter
    into the trainer's model in place)."""

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        self.groups = {group["name"]: (group["initial_lr"], {names[id(p)] for p in group["params"]})  # before decay
                       for group in optimizer.param_groups}
        self.model = copy.deepcopy(model).eval()


class Run:
    """A tiny base checkpoint of `family`, fine-tuned by the recipe of `examples/sft_emola.py` with
    `--add_facial_prior true`."""

    def __init__(self, family, faba, folder):
        root, annotations, self.dataset = faba
        self.family = family
        self.base_dir, self.output_dir = folder / "base", folder / "run"
        base, processor = build_tiny_vlm(family)
        with torch.no_grad():
            # A pretrained output layer spreads its logits; a random one (std 0.02 on 32 numbers) cannot, and LoRA
            # keeps it frozen, so the loss could hardly fall. (Gemma 3 ties it to the input embeddings.)
            base.get_output_embeddings().weight.mul_(15)
        base.save_pretrained(self.base_dir)
        processor.save_pretrained(self.base_dir)
        self.base_state = {name: tensor.clone() for name, tensor in base.state_dict().items()}
        self.vocab = base.get_input_embeddings().num_embeddings
        parser = TrlParser((EmolaScriptArguments, EmolaSFTConfig, ModelConfig))  # as examples/sft_emola.py
        arguments = parser.parse_args_and_config([
            "--model_name_or_path", str(self.base_dir), "--add_facial_prior", "true",
            "--facial_prior_backend", "face_alignment", "--dtype", "float32",
            "--train_annotations", str(annotations), "--image_root", str(root), "--output_dir", str(self.output_dir),
            "--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0",
            "--max_steps", str(STEPS), "--per_device_train_batch_size", "4", "--learning_rate", str(LEARNING_RATE),
            "--mm_projector_lr", str(PROJECTOR_LR), "--warmup_steps", "0", "--logging_steps", "4", "--seed", "1",
            "--use_cpu", "true", "--bf16", "false", "--activation_checkpointing", "false", "--save_strategy", "no",
            "--report_to", "none", "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--merge", "true",
        ])
        self.snapshot = Snapshot()
        self.summary = train_emola(*arguments, callbacks=[self.snapshot])
        self.trainer = self.summary["trainer"]
        self.model = self.snapshot.model  # the trained PeftModel
        self.base_model = self.model.get_base_model()
        self.spec = facial_prior_family(self.base_model)

    def batch(self, processor):
        batch = EmolaDataCollator(processor)([self.dataset[0], self.dataset[1]])
        return {key: value for key, value in batch.items() if key != "labels"}

    def logits(self, model, processor=None):
        with torch.no_grad():
            return model.eval()(**self.batch(processor or self.trainer.processing_class)).logits


@pytest.fixture(scope="module", params=FAMILIES)
def run(request, faba, tmp_path_factory):
    return Run(request.param, faba, tmp_path_factory.mktemp(request.param))


def test_the_base_checkpoint_becomes_emola_and_the_loss_falls(run):
    assert type(run.base_model) is run.spec.for_conditional_generation_class
    assert run.spec.name == run.family
    config = run.base_model.config
    assert (config.facial_prior_dim, config.facial_prior_backend) == (136, "face_alignment")
    processor = run.trainer.processing_class
    assert type(processor) is run.spec.processor_class
    assert config.facial_prior_token_id == processor.facial_prior_token_id == run.vocab  # a new token
    losses = [entry["loss"] for entry in run.trainer.state.log_history if "loss" in entry]
    assert run.summary["global_step"] == STEPS and len(losses) == STEPS // 4
    assert losses[-1] < losses[0] - 0.8 and np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.8, losses
    # "auto" system prompt: the family's own template, not LLaVA's Vicuna prompt
    assert run.trainer.train_dataset[0]["messages"][0]["role"] == "user"
    info = json.loads((run.output_dir / "emola_base.json").read_text())
    assert info["base_model"] == str(run.base_dir) and info["add_facial_prior"] is True


def test_only_lora_and_the_two_projectors_are_trained(run):
    model, spec = run.model, run.spec
    trainable = {name.removeprefix("base_model.model.") for name, p in model.named_parameters() if p.requires_grad}
    projectors = {name.split(".modules_to_save")[0] for name in trainable if ".modules_to_save." in name}
    assert projectors == set(spec.trainable_projectors)  # e.g. model.visual.merger and model.facial_prior_projector
    adapted = {name.split(".lora_")[0] for name in trainable if ".lora_" in name}
    unwrapped = add_facial_prior(build_tiny_vlm(run.family)[0], 136, facial_prior_token_id=0)  # same structure
    assert adapted == set(language_model_linear_names(unwrapped)) and len(adapted) == 2 * 7
    assert all(name.startswith(spec.language_model + ".") for name in adapted)
    assert trainable == {n for n in trainable if ".lora_" in n or ".modules_to_save." in n}
    # every base weight, the vision tower and the language model included, is bit for bit the checkpoint's
    state = run.base_model.state_dict()
    kept = {}
    for name, tensor in state.items():
        if ".lora_" in name or ".modules_to_save." in name:
            continue
        kept[name.replace(".base_layer.", ".").replace(".original_module.", ".")] = tensor
    embeddings = next(name for name in run.base_state if name.endswith("embed_tokens.weight"))
    assert set(run.base_state) <= set(kept) and set(kept) - set(run.base_state) == {
        f"model.facial_prior_projector.linear_{layer}.{kind}" for layer in (1, 2) for kind in ("weight", "bias")}
    for name, tensor in run.base_state.items():
        if name == embeddings or (name == "lm_head.weight" and tensor.shape != kept[name].shape):
            assert torch.equal(kept[name][: run.vocab], tensor), name  # plus the new token's row
        else:
            assert torch.equal(kept[name], tensor), name
    # the trained copies did move
    for path in spec.trainable_projectors:
        wrapper = run.base_model.get_submodule(path)
        original = dict(wrapper.original_module.named_parameters())
        trained = dict(wrapper.modules_to_save.default.named_parameters())
        assert any(not torch.equal(original[name], trained[name]) for name in original), path


def test_optimizer_groups_find_the_familys_projectors_by_module(run):
    spec, groups = run.spec, run.snapshot.groups
    assert {name: lr for name, (lr, _) in groups.items()} == {
        "language_model.no_decay": LEARNING_RATE, "multi_modal_projector.no_decay": PROJECTOR_LR,
        "facial_prior_projector.no_decay": LEARNING_RATE}
    members = {name: {n.removeprefix("base_model.model.") for n in params} for name, (_, params) in groups.items()}
    trainable = {n.removeprefix("base_model.model.") for n, p in run.model.named_parameters() if p.requires_grad}
    for group, path in (("multi_modal_projector", spec.projector),
                        ("facial_prior_projector", spec.trainable_projectors[1])):
        assert members[f"{group}.no_decay"] == {n for n in trainable if n.startswith(f"{path}.modules_to_save.")}
    assert members["language_model.no_decay"] == {n for n in trainable if ".lora_" in n}


def test_merged_checkpoint_and_adapter_reproduce_the_trained_model(run, tmp_path):
    trained = run.logits(run.model)
    merged_dir = run.output_dir / "merged"
    model = AutoModelForImageTextToText.from_pretrained(merged_dir)
    processor = AutoProcessor.from_pretrained(merged_dir)
    assert type(model) is run.spec.for_conditional_generation_class and type(processor) is run.spec.processor_class
    torch.testing.assert_close(run.logits(model, processor), trained, atol=1e-4, rtol=1e-4)
    # the adapter alone: the base converted again (same new rows), the adapter loaded onto it and merged
    later = AutoModelForImageTextToText.from_pretrained(merge_adapter_checkpoint(run.output_dir, tmp_path / "later",
                                                                                 dtype=torch.float32))
    torch.testing.assert_close(run.logits(later), trained, atol=1e-4, rtol=1e-4)
    base, _ = load_model_and_processor(str(run.base_dir), add_facial_prior=True, facial_prior_dim=136,
                                       facial_prior_backend="face_alignment")
    adapter = PeftModel.from_pretrained(base, run.output_dir)
    torch.testing.assert_close(run.logits(adapter), trained, atol=1e-5, rtol=1e-5)
    # an EmoLA checkpoint of the family is trained further as it is, with or without the flag
    for flag in (False, True):
        again, again_processor = load_model_and_processor(str(merged_dir), add_facial_prior=flag, facial_prior_dim=136)
        assert type(again) is type(model) and type(again_processor) is type(processor)
        assert torch.equal(again.model.facial_prior_projector.linear_1.weight,
                           model.model.facial_prior_projector.linear_1.weight)


def test_a_base_checkpoint_needs_the_flag_or_trains_without_the_prior(run):
    with pytest.raises(ValueError, match=f"{run.family} base model without the facial prior: pass --add_facial_prior"):
        load_model_and_processor(str(run.base_dir), facial_prior_dim=136)
    model, processor = load_model_and_processor(str(run.base_dir), use_facial_prior=False)
    assert type(model).__name__ == run.spec.base_config_class.__name__.replace("Config", "ForConditionalGeneration")
    assert not processor.use_facial_prior and "<facial_prior>" not in processor.tokenizer.get_vocab()
