"""Conversion of an original EmoLA release (LoRA + projector files on LLaVA-1.5) to `EmolaForConditionalGeneration`.

The test writes a tiny release in the original layout (Llama + CLIP + PEFT LoRA + `non_lora_trainables.bin` +
`landmark_feature_projector.bin`) and checks the converted model against a reference written here, independently
of `modeling_emola`: the original EmoLA forward (CLIP layer -2 patch tokens -> mm_projector, plus one landmark token,
spliced at IMAGE_TOKEN_INDEX = -200), run with PEFT applying the LoRA on the fly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from transformers_emola.convert_emola_original_to_hf import (
    ConversionError,
    convert_emola_checkpoint,
    landmark_projector_state,
    load_weights_file,
    merge_lora,
    original_key_to_hf,
    strip_non_lora_prefixes,
)

peft = pytest.importorskip("peft")

IMAGE_TOKEN_INDEX = -200  # llava.constants
HIDDEN = 32
VISION_HIDDEN = 24
IMAGE_SIZE = 56  # 4 x 4 = 16 patch tokens (576 at 336 px / 14)
PATCH = 14
PRIOR_DIM = 212  # insightface 2d106
LORA_R, LORA_ALPHA = 4, 8
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---- a tiny release in the original layout -----------------------------------------------------------------------
def bare_tokenizer():
    """A Llama-like tokenizer without <image>, <pad> or <facial_prior>, like liuhaotian/llava-v1.5-7b's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from transformers_emola.tiny import BASE_CORPUS

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()-/%\n "),
    )  # fmt: skip
    tokenizer.train_from_iterator(BASE_CORPUS, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>")  # fmt: skip  (LLaVA-1.5 pads with <unk>)


def mlp(in_dim: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_dim, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN))


def prefixed(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value.clone() for key, value in module.state_dict().items()}


class OriginalRelease:
    """The parts of a released EmoLA, on disk in the original layout and in memory as the reference model."""

    def __init__(self, root: Path, tokenizer, seed: int = 0):
        from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

        self.root, self.tokenizer = root, tokenizer
        self.base, self.emola, self.clip = root / "llava-v1.5-7b", root / "llava-v1.5-7b-lora-emola-au", root / "clip"
        torch.manual_seed(seed)
        self.llama_config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=0,
            tie_word_embeddings=False,
        )  # fmt: skip
        self.llama = LlamaForCausalLM(self.llama_config).eval()
        self.clip_model = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=VISION_HIDDEN, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=VISION_HIDDEN,
        )).eval()  # fmt: skip
        self.image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
        self.base_projector = mlp(VISION_HIDDEN, seed + 1)
        self.mm_projector = mlp(VISION_HIDDEN, seed + 2)  # fine-tuned by EmoLA: non_lora_trainables.bin
        self.landmark_projector = mlp(PRIOR_DIM, seed + 3)
        self.stale_landmark_projector = mlp(PRIOR_DIM, seed + 4)

        # PEFT LoRA on every Llama linear layer (find_all_linear_names), with non-zero B so it changes the output.
        config = peft.LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS, lora_dropout=0.0,
                                 bias="none", task_type="CAUSAL_LM")  # fmt: skip
        base_state = {key: value.clone() for key, value in self.llama.state_dict().items()}
        self.peft_model = peft.get_peft_model(self.llama, config).eval()
        with torch.no_grad():
            for name, param in self.peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.2)
        self.write(base_state)

    def write(self, base_state: dict) -> None:
        for folder in (self.base, self.emola, self.clip):
            folder.mkdir(parents=True, exist_ok=True)
        flat_config = {
            **{key: value for key, value in self.llama_config.to_dict().items() if key != "rope_parameters"},
            "rope_theta": 10000.0, "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava",
            "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": VISION_HIDDEN, "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
            "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
        }  # fmt: skip
        # Base: LlavaLlamaForCausalLM = Llama keys + model.mm_projector, as two .bin shards with an index; old
        # transformers also saved rotary inv_freq buffers, and some copies embed the tower (the original ignores it).
        state = dict(base_state)
        state.update(prefixed(self.base_projector, "model.mm_projector."))
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
        state["model.vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(VISION_HIDDEN)
        keys = sorted(state)
        shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                  "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}  # fmt: skip
        for name, shard_keys in shards.items():
            torch.save({key: state[key] for key in shard_keys}, self.base / name)
        weight_map = {key: name for name, shard_keys in shards.items() for key in shard_keys}
        (self.base / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        (self.base / "config.json").write_text(json.dumps(flat_config))
        self.tokenizer.save_pretrained(self.base)
        # CLIP tower folder (CLIPVisionModel + its preprocessor config).
        self.clip_model.save_pretrained(self.clip)
        self.image_processor.save_pretrained(self.clip)
        # EmoLA: PEFT adapter, non_lora_trainables.bin (projectors, PEFT-prefixed), landmark_feature_projector.bin.
        self.peft_model.save_pretrained(self.emola)
        landmark_keys = prefixed(self.landmark_projector, "base_model.model.model.landmark_feature_projector.")
        # non_lora_trainables.bin also holds a prior projector, but a different one (an earlier snapshot, say): the
        # official builder loads landmark_feature_projector.bin last, so that file's weights must win.
        stale_landmark = prefixed(self.stale_landmark_projector, "base_model.model.model.landmark_feature_projector.")
        non_lora = {**prefixed(self.mm_projector, "base_model.model.model.mm_projector."), **stale_landmark}
        torch.save(non_lora, self.emola / "non_lora_trainables.bin")
        torch.save(landmark_keys, self.emola / "landmark_feature_projector.bin")
        (self.emola / "config.json").write_text(json.dumps(
            {**flat_config, "model_type": "emollava", "landmark_feature_hidden_size": PRIOR_DIM}
        ))  # fmt: skip

    # ---- the reference: the original forward ----------------------------------------------------------------------
    @torch.no_grad()
    def embeds(self, ids: list[int], pixel_values: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """`prepare_inputs_labels_for_multimodal` for one image: 576 (here 16) CLIP tokens, then the landmark."""
        features = self.clip_model(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        image_features = torch.cat([self.mm_projector(features), self.landmark_projector(prior)[:, None]], dim=1)[0]
        position = ids.index(IMAGE_TOKEN_INDEX)
        embed = self.peft_model.get_input_embeddings()
        before, after = embed(torch.tensor(ids[:position])), embed(torch.tensor(ids[position + 1 :]))
        return torch.cat([before, image_features, after])[None]

    @torch.no_grad()
    def logits(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.peft_model(inputs_embeds=embeds).logits

    @torch.no_grad()
    def greedy(self, ids, pixel_values, prior, steps: int, banned: list[int]) -> list[int]:
        embeds, generated = self.embeds(ids, pixel_values, prior), []
        for _ in range(steps):
            logits = self.logits(embeds)[0, -1]
            logits[banned] = -float("inf")
            token = int(logits.argmax())
            generated.append(token)
            if token == self.tokenizer.eos_token_id:
                break
            embeds = torch.cat([embeds, self.peft_model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
        return generated


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return OriginalRelease(tmp_path_factory.mktemp("release"), bare_tokenizer())


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    output = tmp_path_factory.mktemp("converted")
    summary = convert_emola_checkpoint(release.base, release.emola, output, vision_tower_path=release.clip,
                                       dtype="float32", max_shard_size="100KB")  # fmt: skip
    return output, summary


def load_converted(path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import transformers_emola  # noqa: F401  (registers EmoLA with the Auto classes)

    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def face_inputs(processor, question="What AUs are conveyed by this face?"):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))  # not square: no padding at eval
    prior = torch.from_numpy(rng.uniform(-1, 1, (1, PRIOR_DIM)).astype(np.float32))
    return image, prior, processor(images=image, text=prompt, facial_priors=prior, return_tensors="pt")


def original_ids(input_ids: torch.Tensor, config) -> list[int]:
    """The original prompt ids: one IMAGE_TOKEN_INDEX where our processor put the image and prior placeholders."""
    ids = input_ids[0].tolist()
    placeholders = {config.image_token_index, config.facial_prior_token_id}
    start = next(i for i, token in enumerate(ids) if token in placeholders)
    end = max(i for i, token in enumerate(ids) if token in placeholders) + 1
    assert end - start == config.image_seq_length + 1
    return ids[:start] + [IMAGE_TOKEN_INDEX] + ids[end:]


def assert_matches_reference(release, model, processor, steps=12):
    image, prior, inputs = face_inputs(processor)
    # Eval-time image processing: CLIP resize + centre crop, no pad to square.
    expected_pixels = release.image_processor(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(inputs["pixel_values"], expected_pixels, rtol=0, atol=0)
    ids = original_ids(inputs["input_ids"], model.config)
    vocab = len(release.tokenizer)
    with torch.no_grad():
        ours = model(**inputs).logits[..., :vocab]
    reference = release.logits(release.embeds(ids, inputs["pixel_values"], prior))
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= 1e-5
    assert reference.abs().max().item() > 0.1  # a real comparison, not of near-zero numbers
    banned = [t for t in (model.config.image_token_index, model.config.facial_prior_token_id) if t < vocab]
    expected = release.greedy(ids, inputs["pixel_values"], prior, steps, banned)
    generated = model.generate(**inputs, max_new_tokens=steps, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert generated.tolist() == expected


# ---- parity ------------------------------------------------------------------------------------------------------
def test_original_layout_matches_original_forward(release, converted):
    output, summary = converted
    model, processor = load_converted(output)
    assert_matches_reference(release, model, processor)

    assert summary.base_layout == "original"
    assert summary.added_tokens == ["<image>", "<pad>", "<facial_prior>"]
    assert summary.lora_scale == LORA_ALPHA / LORA_R
    assert len(summary.merged_lora_modules) == 2 * len(LORA_TARGETS)
    assert summary.non_lora_keys == [f"model.multi_modal_projector.linear_{i}.{p}" for i in (1, 2)
                                     for p in ("weight", "bias")]  # fmt: skip
    # Placeholders appended in llava-hf's order, embeddings padded to a multiple of 64.
    base_vocab = len(release.tokenizer)
    tokenizer = processor.tokenizer
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<pad>", "<facial_prior>")] == [
        base_vocab, base_vocab + 1, base_vocab + 2]  # fmt: skip
    assert tokenizer.pad_token == "<pad>" and tokenizer.padding_side == "left"
    rows = model.config.text_config.vocab_size
    assert rows % 64 == 0 and rows >= base_vocab + 3 and model.lm_head.weight.shape[0] == rows
    assert set(model.generation_config.suppress_tokens) == set(range(base_vocab, rows))
    # Config and processor as the released model needs them.
    config = model.config
    assert (config.facial_prior_dim, config.facial_prior_backend) == (PRIOR_DIM, "insightface_2d106")
    assert (config.image_seq_length, config.vision_feature_layer) == ((IMAGE_SIZE // PATCH) ** 2, -2)
    assert config.vision_feature_select_strategy == "default"
    assert processor.pad_to_square is False
    assert processor.facial_prior_extractor["backend"] == "insightface_2d106"
    assert "{{- system }}" in processor.chat_template or "USER" in processor.chat_template
    # Weights: untouched base, merged LoRA, EmoLA's projectors.
    state = model.state_dict()
    for ours, theirs in (("linear_1", 0), ("linear_2", 2)):
        for param in ("weight", "bias"):
            converted_value = state[f"model.facial_prior_projector.{ours}.{param}"]
            torch.testing.assert_close(converted_value, getattr(release.landmark_projector[theirs], param),
                                       rtol=0, atol=0)  # fmt: skip
            assert not torch.equal(converted_value, getattr(release.stale_landmark_projector[theirs], param))
    torch.testing.assert_close(state["model.multi_modal_projector.linear_2.bias"], release.mm_projector[2].bias,
                               rtol=0, atol=0)  # fmt: skip
    torch.testing.assert_close(state["model.language_model.norm.weight"], release.llama.model.norm.weight,
                               rtol=0, atol=0)  # fmt: skip
    # Sharded safetensors.
    assert (output / "model.safetensors.index.json").is_file()
    assert len(list(output.glob("model-*.safetensors"))) > 1


def test_tiny_tokenizer_with_placeholders_keeps_vocabulary(tmp_path):
    from transformers_emola.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    assert {"<image>", "<facial_prior>", "<pad>"} <= set(tokenizer.get_vocab())
    release = OriginalRelease(tmp_path / "release", tokenizer, seed=5)
    summary = convert_emola_checkpoint(release.base, release.emola, tmp_path / "out",
                                       vision_tower_path=release.clip, dtype="float32")  # fmt: skip
    model, processor = load_converted(tmp_path / "out")
    assert summary.added_tokens == [] and summary.vocab_size == len(tokenizer)
    assert model.config.image_token_index == tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.facial_prior_token_id == tokenizer.convert_tokens_to_ids("<facial_prior>")
    assert_matches_reference(release, model, processor)


@pytest.mark.parametrize("legacy_keys", [False, True], ids=["llava-hf", "llava-hf-legacy-keys"])
def test_llava_hf_layout_base(release, converted, tmp_path, legacy_keys):
    """The same release on a llava-hf LlavaForConditionalGeneration base gives the same model."""
    from safetensors.torch import load_file, save_file
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tokenizer = bare_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    rows = 64 * -(-len(tokenizer) // 64)
    text_config = release.llama_config.to_dict()
    text_config.update(vocab_size=rows, pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=release.clip_model.config.to_dict(), text_config=text_config,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=16)  # fmt: skip
    llava = LlavaForConditionalGeneration(config)
    state = {}
    for key, value in release.peft_model.get_base_model().state_dict().items():
        key = key.replace(".base_layer", "")
        if "lora_" in key:
            continue
        state[("model.language_model." + key[len("model.") :]) if key.startswith("model.") else key] = value
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        state[key] = torch.cat([state[key], torch.randn(rows - state[key].shape[0], HIDDEN)])
    state.update({"model.vision_tower." + k: v for k, v in release.clip_model.state_dict().items()})
    state.update({"model.multi_modal_projector." + k.replace("0.", "linear_1.").replace("2.", "linear_2."): v
                  for k, v in release.base_projector.state_dict().items()})  # fmt: skip
    llava.load_state_dict(state, strict=True)
    folder = tmp_path / "llava-1.5-7b-hf"
    llava.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if legacy_keys:  # the layout of llava-hf/llava-1.5-7b-hf on the Hub (transformers < 4.52)
        saved = load_file(folder / "model.safetensors")
        renamed = {}
        for key, value in saved.items():
            key = key.replace("model.language_model.", "language_model.model.")
            key = "language_model.lm_head.weight" if key == "lm_head.weight" else key
            key = key.replace("model.vision_tower.", "vision_tower.vision_model.")
            key = key.replace("model.multi_modal_projector.", "multi_modal_projector.")
            renamed[key] = value
        save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})

    summary = convert_emola_checkpoint(folder, release.emola, tmp_path / "out", dtype="float32")
    assert summary.base_layout == "llava-hf"
    assert summary.added_tokens == ["<facial_prior>"] and summary.vocab_size == rows
    model, processor = load_converted(tmp_path / "out")
    assert_matches_reference(release, model, processor)
    # Same ids and same logits as the conversion from the liuhaotian layout.
    reference_model, _ = load_converted(converted[0])
    assert model.config.facial_prior_token_id == reference_model.config.facial_prior_token_id
    _, _, inputs = face_inputs(processor)
    vocab = len(release.tokenizer)
    with torch.no_grad():
        diff = model(**inputs).logits[..., :vocab] - reference_model(**inputs).logits[..., :vocab]
    assert diff.abs().max().item() <= 1e-5


# ---- refusals ----------------------------------------------------------------------------------------------------
@pytest.fixture
def release_copy(release, tmp_path):
    """A writable copy of the EmoLA folder (the base and CLIP are only read)."""
    emola = tmp_path / "emola"
    shutil.copytree(release.emola, emola)
    return emola


def convert(release, emola, tmp_path):
    return convert_emola_checkpoint(release.base, emola, tmp_path / "out", vision_tower_path=release.clip,
                                    dtype="float32")  # fmt: skip


def test_missing_landmark_projector_is_an_error(release, release_copy, tmp_path):
    (release_copy / "landmark_feature_projector.bin").unlink()
    with pytest.raises(ConversionError, match="landmark_feature_projector.bin"):
        convert(release, release_copy, tmp_path)
    assert not (tmp_path / "out").exists()


def test_unexpected_non_lora_key_is_listed(release, release_copy, tmp_path):
    path = release_copy / "non_lora_trainables.bin"
    state = torch.load(path, weights_only=True)
    state["base_model.model.model.face_feature_projector.0.weight"] = torch.zeros(2, 2)
    torch.save(state, path)
    with pytest.raises(ConversionError, match=r"Unexpected keys in .*non_lora_trainables.bin.*face_feature_projector"):
        convert(release, release_copy, tmp_path)


def test_unexpected_landmark_key_and_missing_layer_are_listed(release, release_copy, tmp_path):
    path = release_copy / "landmark_feature_projector.bin"
    state = torch.load(path, weights_only=True)
    del state["base_model.model.model.landmark_feature_projector.2.bias"]
    state["base_model.model.model.landmark_feature_projector.4.weight"] = torch.zeros(2, 2)
    torch.save(state, path)
    with pytest.raises(ConversionError, match=r"unexpected keys \[.*projector\.4\.weight'\], missing \[.*2\.bias"):
        convert(release, release_copy, tmp_path)


def test_unknown_lora_target_is_listed(release, release_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    path = release_copy / "adapter_model.safetensors"
    state = load_file(path)
    state["base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight"] = torch.zeros(LORA_R, HIDDEN)
    state["base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight"] = torch.zeros(HIDDEN, LORA_R)
    save_file(state, path)
    with pytest.raises(ConversionError, match=r"not weights of the base model: \['model.layers.9.self_attn.q_proj'\]"):
        convert(release, release_copy, tmp_path)


def test_adapter_bin_and_prefix_variants_convert_identically(release, release_copy, converted, tmp_path):
    """`adapter_model.bin` (peft 0.4, as released) and a landmark file without the PEFT prefix."""
    from safetensors.torch import load_file

    (release_copy / "adapter_model.safetensors").rename(tmp_path / "adapter.safetensors")
    torch.save(load_file(tmp_path / "adapter.safetensors"), release_copy / "adapter_model.bin")
    landmark = torch.load(release_copy / "landmark_feature_projector.bin", weights_only=True)
    torch.save({k.replace("base_model.model.model.", ""): v for k, v in landmark.items()},
               release_copy / "landmark_feature_projector.bin")  # fmt: skip
    convert(release, release_copy, tmp_path)
    ours = load_weights_file(tmp_path / "out" / "model.safetensors")
    expected = {}
    for shard in (converted[0]).glob("model-*.safetensors"):
        expected.update(load_weights_file(shard))
    assert ours.keys() == expected.keys()
    assert all(torch.equal(ours[key], expected[key]) for key in ours)


def test_original_base_without_vision_tower_is_an_error(release, tmp_path):
    with pytest.raises(ConversionError, match="vision_tower_path"):
        convert_emola_checkpoint(release.base, release.emola, tmp_path / "out", dtype="float32")


def test_prior_backend_must_fit_the_projector(release, tmp_path):
    with pytest.raises(ConversionError, match="'face_alignment' gives 136-d priors but the prior projector takes 212"):
        convert_emola_checkpoint(release.base, release.emola, tmp_path / "out", vision_tower_path=release.clip,
                                 facial_prior_backend="face_alignment")  # fmt: skip
    with pytest.raises(ConversionError, match="Unknown facial_prior_backend 'insightface'"):
        convert_emola_checkpoint(release.base, release.emola, tmp_path / "out", vision_tower_path=release.clip,
                                 facial_prior_backend="insightface")  # fmt: skip
    with pytest.raises(ConversionError, match="dtype must be a floating-point"):
        convert_emola_checkpoint(release.base, release.emola, tmp_path / "out", vision_tower_path=release.clip,
                                 dtype="int8")  # fmt: skip


class _NotATensor:
    pass


def test_pickles_are_loaded_with_weights_only(tmp_path):
    path = tmp_path / "non_lora_trainables.bin"
    torch.save({"w": torch.zeros(1), "payload": _NotATensor()}, path)
    with pytest.raises(ConversionError, match="weights_only=True"):
        load_weights_file(path)


# ---- key handling units ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prefix", ["base_model.model.model.landmark_feature_projector.", "model.landmark_feature_projector.",
               "landmark_feature_projector."],
)  # fmt: skip
def test_landmark_projector_prefixes(prefix):
    state = {f"{prefix}{i}.{p}": torch.full((1,), float(i)) for i in (0, 2) for p in ("weight", "bias")}
    mapped = landmark_projector_state(state, "landmark_feature_projector.bin")
    assert {k: v.item() for k, v in mapped.items()} == {
        "model.facial_prior_projector.linear_1.weight": 0.0, "model.facial_prior_projector.linear_1.bias": 0.0,
        "model.facial_prior_projector.linear_2.weight": 2.0, "model.facial_prior_projector.linear_2.bias": 2.0,
    }  # fmt: skip


def test_non_lora_prefixes_follow_the_original_loader():
    value = torch.zeros(1)
    assert list(strip_non_lora_prefixes({"base_model.model.model.mm_projector.0.weight": value})) == [
        "model.mm_projector.0.weight"]  # fmt: skip
    assert list(strip_non_lora_prefixes({"model.mm_projector.0.weight": value})) == ["model.mm_projector.0.weight"]
    assert original_key_to_hf("model.mm_projector.0.bias") == "model.multi_modal_projector.linear_1.bias"
    assert original_key_to_hf("model.layers.1.mlp.down_proj.weight") == (
        "model.language_model.layers.1.mlp.down_proj.weight")  # fmt: skip
    assert original_key_to_hf("language_model.model.norm.weight") == "model.language_model.norm.weight"
    assert original_key_to_hf("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    with pytest.raises(KeyError):
        original_key_to_hf("model.face_feature_projector.0.weight")


@pytest.mark.parametrize("rslora", [False, True])
def test_merge_lora_formula(rslora):
    torch.manual_seed(0)
    weight, lora_a, lora_b = torch.randn(6, 5), torch.randn(3, 5), torch.randn(6, 3)
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    weights = {key: weight.clone()}
    adapter = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": lora_a,
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": lora_b}  # fmt: skip
    scales = merge_lora(weights, adapter, {"lora_alpha": 12, "r": 3, "use_rslora": rslora})
    scale = 12 / (3**0.5 if rslora else 3)
    assert scales == {key: pytest.approx(scale)}
    torch.testing.assert_close(weights[key], weight + scale * lora_b @ lora_a)
    with pytest.raises(ConversionError, match="only one of lora_A / lora_B"):
        merge_lora(dict(weights), {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": lora_a},
                   {"lora_alpha": 12})  # fmt: skip


# ---- command line ------------------------------------------------------------------------------------------------
def test_cli_convert(release, tmp_path, capsys):
    from transformers_emola.cli import main

    code = main(["convert", "--base", str(release.base), "--emola", str(release.emola), "--vision-tower",
                 str(release.clip), "--output", str(tmp_path / "out"), "--dtype", "float32"])  # fmt: skip
    assert code == 0
    assert "LoRA merged into 14 weights (scale 2.0)" in capsys.readouterr().out
    model, processor = load_converted(tmp_path / "out")
    assert_matches_reference(release, model, processor, steps=4)

    code = main(["convert", "--base", str(release.base), "--emola", str(tmp_path / "nowhere"), "--output",
                 str(tmp_path / "out2")])  # fmt: skip
    assert code == 2
    assert "emola_path must be a local folder" in capsys.readouterr().err


# ---- every refusal docs/conversion.md promises ---------------------------------------------------------------------
@pytest.fixture
def base_copy(release, tmp_path):
    """A writable copy of the original-layout base."""
    base = tmp_path / "base"
    shutil.copytree(release.base, base)
    return base


def edit_base(base: Path, edit) -> None:
    """Apply `edit(state)` to the base's weights, rewritten as one `pytorch_model.bin` (the shards go)."""
    state = load_weights_file(base / "pytorch_model-00001-of-00002.bin")
    state.update(load_weights_file(base / "pytorch_model-00002-of-00002.bin"))
    edit(state)
    for path in base.glob("pytorch_model*"):
        path.unlink()
    torch.save(state, base / "pytorch_model.bin")


def convert_with_base(release, base, emola, tmp_path):
    return convert_emola_checkpoint(base, emola, tmp_path / "out", vision_tower_path=release.clip, dtype="float32")


def edit_emola_config(emola: Path, **changes) -> None:
    path = emola / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("name", ["adapter_config.json", "non_lora_trainables.bin"])
def test_missing_release_file_is_named(release, release_copy, tmp_path, name):
    (release_copy / name).unlink()
    with pytest.raises(ConversionError, match=rf"incomplete, missing: \[.*{name}"):
        convert(release, release_copy, tmp_path)


def test_missing_adapter_weights_are_named(release, release_copy, tmp_path):
    (release_copy / "adapter_model.safetensors").unlink()
    with pytest.raises(ConversionError, match=r"missing: \[.*adapter_model.safetensors or adapter_model.bin"):
        convert(release, release_copy, tmp_path)


def test_unexpected_base_key_is_listed(release, base_copy, tmp_path):
    edit_base(base_copy, lambda state: state.update({"model.face_adapter.weight": torch.zeros(2)}))
    with pytest.raises(ConversionError, match=r"Unexpected keys in the base model .*\['model.face_adapter.weight'\]"):
        convert_with_base(release, base_copy, release.emola, tmp_path)


def test_base_weight_without_a_source_is_named(release, base_copy, tmp_path):
    edit_base(base_copy, lambda state: state.pop("model.norm.weight"))
    with pytest.raises(ConversionError, match=r"missing \['model.language_model.norm.weight'\]"):
        convert_with_base(release, base_copy, release.emola, tmp_path)


def test_base_weight_of_the_wrong_shape_is_named(release, base_copy, tmp_path):
    def shrink(state):
        state["model.layers.1.input_layernorm.weight"] = torch.ones(HIDDEN - 1)

    edit_base(base_copy, shrink)
    with pytest.raises(ConversionError, match=r"shape mismatches \['model.language_model.layers.\d+.input_layernorm"
                                              r".weight: \(31,\) vs \(32,\)'\]"):
        convert_with_base(release, base_copy, release.emola, tmp_path)


def test_lora_that_does_not_fit_its_base_weight_is_named(release, release_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    path = release_copy / "adapter_model.safetensors"
    state = load_file(path)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    state[key] = torch.zeros(HIDDEN + 3, LORA_R)
    save_file(state, path)
    with pytest.raises(ConversionError, match=r"LoRA of model.layers.0.self_attn.q_proj has A \(4, 32\) and B "
                                              r"\(35, 4\), which do not fit the base weight"):
        convert(release, release_copy, tmp_path)


def test_non_lora_weight_that_does_not_fit_its_base_weight_is_named(release, release_copy, tmp_path):
    path = release_copy / "non_lora_trainables.bin"
    state = torch.load(path, weights_only=True)
    state["base_model.model.model.mm_projector.2.bias"] = torch.zeros(HIDDEN + 1)
    torch.save(state, path)
    with pytest.raises(ConversionError, match=r"non_lora_trainables.bin: model.mm_projector.2.bias has shape \(33,\),"
                                              r" the base weight model.multi_modal_projector.linear_2.bias has \(32,\)"):
        convert(release, release_copy, tmp_path)


def test_adapter_keys_that_are_not_lora_are_listed(release, release_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    path = release_copy / "adapter_model.safetensors"
    state = load_file(path)
    state["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = torch.ones(HIDDEN)
    save_file(state, path)
    with pytest.raises(ConversionError, match=r"keys that are not LoRA A/B weights: \[.*lora_magnitude_vector"):
        convert(release, release_copy, tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"use_dora": True}, "DoRA adapters"),
        ({"alpha_pattern": {"q_proj": 16}}, "per-module alpha_pattern is not supported"),
        ({"peft_type": "IA3"}, "expected a LoRA adapter, got peft_type='IA3'"),
    ],
    ids=["dora", "alpha_pattern", "not-lora"],
)
def test_unsupported_adapter_settings(release, release_copy, tmp_path, changes, message):
    path = release_copy / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    with pytest.raises(ConversionError, match=rf"adapter_model.safetensors: {message}"):
        convert(release, release_copy, tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mm_projector_type": "linear"}, "mm_projector_type='linear'; only 'mlp2x_gelu'"),
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end=true is not supported"),
        ({"mm_use_im_patch_token": True}, "mm_use_im_patch_token=true is not supported"),
        ({"landmark_feature_hidden_size": 136}, "landmark_feature_hidden_size=136 but landmark_feature_projector.bin "
                                                "takes 212-d inputs"),
    ],
    ids=["projector", "im_start_end", "im_patch_token", "prior-size"],
)
def test_unsupported_release_config(release, release_copy, tmp_path, changes, message):
    edit_emola_config(release_copy, **changes)
    with pytest.raises(ConversionError, match=message):
        convert(release, release_copy, tmp_path)
    assert not (tmp_path / "out").exists()
