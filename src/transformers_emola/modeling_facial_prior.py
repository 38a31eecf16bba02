# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""The facial-prior token: EmoLA's one idea, as a delta that any placeholder-token VLM can carry.

A landmark vector per image goes through its own `mlp2x_gelu` projector and replaces the embedding of the one
`<facial_prior>` token that the processor puts right after that image's visual tokens. The swap happens where the
token embeddings are made; then the base model's own forward runs unchanged (image scattering, position scheme,
cache, output objects). Nothing here restates an upstream forward, so upstream refactors of those bodies (5.24 moved
LLaVA's image outputs, renamed `past_key_values` to `cache`) do not reach EmoLA.

Two mixins carry the delta, one for each level transformers' VLMs have:

- `FacialPriorModelMixin` for the inner model (`LlavaModel`, `Qwen2_5_VLModel`, ...): owns the projector and puts
  the prior into the input embeddings. TRL, PEFT and `generate`'s helpers call this level directly.
- `FacialPriorForConditionalGenerationMixin` for the LM-head model: the same swap before the base forward (so its
  output can report the prior's embeddings), and the generate plumbing (priors are read at prefill only, grouped
  per sample when beams or `num_return_sequences` expand the batch, placeholders never generated).

A family opts in by listing the mixins before its base classes and naming its inner class on the LM-head class
(`facial_prior_model_class`); the config carries `facial_prior_token_id`, `facial_prior_dim`, `facial_prior_backend`
and `use_facial_prior` (`FacialPriorConfigMixin`). `modeling_emola_qwen2_5_vl.py` is a whole binding.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, torch_compilable_check
from transformers.utils.generic import ModelOutput, can_return_tuple


class EmolaFacialPriorProjector(nn.Module):
    """`mlp2x_gelu` from the landmark vector to the LLM width: EmoLA's g_theta, trained from scratch."""

    def __init__(self, config):
        super().__init__()
        hidden_size = config.get_text_config().hidden_size
        bias = getattr(config, "multimodal_projector_bias", True)
        self.linear_1 = nn.Linear(config.facial_prior_dim, hidden_size, bias=bias)
        self.act = ACT2FN[getattr(config, "projector_hidden_act", "gelu")]
        self.linear_2 = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(self, facial_priors: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(facial_priors)))


_FACIAL_PRIOR_FIELD = "facial_prior_hidden_states"
_OUTPUT_CLASSES: dict[type, type] = {}


def register_facial_prior_output(base: type, output_class: type) -> type:
    """Use `output_class` (a subclass of `base` with a `facial_prior_hidden_states` field) for `base`'s outputs."""
    _OUTPUT_CLASSES[base] = output_class
    return output_class


def facial_prior_output_class(base: type) -> type:
    """`base` (an upstream `ModelOutput` class) plus the `facial_prior_hidden_states` field; made once per class."""
    if base not in _OUTPUT_CLASSES:
        namespace = {
            "__module__": __name__,
            "__qualname__": f"Emola{base.__name__}",
            "__annotations__": {_FACIAL_PRIOR_FIELD: torch.Tensor | None},
            _FACIAL_PRIOR_FIELD: None,
            "__doc__": f"`{base.__name__}` plus `facial_prior_hidden_states` (num_images, hidden_size): the "
            "projected facial priors placed at the `<facial_prior>` tokens.",
        }
        _OUTPUT_CLASSES[base] = dataclasses.dataclass(type(f"Emola{base.__name__}", (base,), namespace))
    return _OUTPUT_CLASSES[base]


def with_facial_prior(outputs: ModelOutput, prior_hidden_states: torch.Tensor | None) -> ModelOutput:
    """The base model's output object, re-typed to carry the facial-prior embeddings (every upstream field kept)."""
    return facial_prior_output_class(type(outputs))(**outputs, **{_FACIAL_PRIOR_FIELD: prior_hidden_states})


_FACIAL_PRIORS_PARAMETER = inspect.Parameter(
    "facial_priors", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="torch.FloatTensor | None"
)


def _take_base_signature(mixin: type, cls: type, name: str, extra: tuple[inspect.Parameter, ...] = ()) -> None:
    """Give `cls.<name>` (the mixin's implementation) the signature of the base method it wraps, plus `extra`.

    transformers reads signatures: `generate` validates its keyword arguments against `forward`'s, and the common
    tests look for `inputs_embeds` or `output_attentions` there. The base's own parameter list (whatever this
    transformers version calls its cache argument) keeps positional calls and that introspection as they are.
    """
    implementation = mixin.__dict__[name]
    base_signature = inspect.signature(getattr(super(mixin, cls), name))
    parameters = list(base_signature.parameters.values())
    if parameters and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD:
        parameters[-1:-1] = extra
    else:
        parameters += extra
    extra_names = {parameter.name for parameter in extra}

    @functools.wraps(implementation)
    def method(self, *args, **kwargs):
        if args:  # bind positional arguments the way the base method would, then pass everything by name
            own = {key: kwargs.pop(key) for key in extra_names & kwargs.keys()}
            bound = base_signature.bind(self, *args, **kwargs).arguments
            bound.pop(next(iter(base_signature.parameters)))
            var_keyword = [p.name for p in base_signature.parameters.values() if p.kind is p.VAR_KEYWORD]
            kwargs = {**bound, **(bound.pop(var_keyword[0], {}) if var_keyword else {}), **own}
        return implementation(self, **kwargs)

    del method.__wrapped__
    method.__signature__ = base_signature.replace(parameters=parameters)
    setattr(cls, name, method)


def _has_visual_inputs(kwargs: dict) -> bool:
    return kwargs.get("pixel_values") is not None or kwargs.get("mm_encoder_outputs") is not None


class InLibraryInitMixin:
    """Initialise missing weights as transformers does for its own models.

    transformers treats any class defined outside its package as custom (Hub) code and then marks a module
    initialised when all its *direct* parameters were loaded — vacuously true for containers such as CLIP's
    attention and MLP blocks, whose `_init_weights` branches are then skipped. EmoLA initialises only through
    transformers' guarded initialisers, so it asks for the in-library path: a weight missing from a checkpoint gets
    the base model's own initialisation (transformers' `test_can_init_all_missing_weights`).
    """

    @classmethod
    def is_custom_code(cls) -> bool:
        return False


class FacialPriorModelMixin(InLibraryInitMixin):
    """The facial-prior delta on a VLM's inner model: projector, placeholder mask, swap into the embeddings, checks.

    List it before the base class (`class EmolaModel(FacialPriorModelMixin, LlavaModel)`): the base builds its
    modules, then the prior projector is added (`None` when `config.use_facial_prior` is False).
    """

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        if config.use_facial_prior and config.facial_prior_token_id is None:
            raise ValueError(
                "config.facial_prior_token_id is None: set the id of the <facial_prior> token (add_facial_prior does "
                "this) or use_facial_prior=False"
            )
        self.facial_prior_projector = EmolaFacialPriorProjector(config) if config.use_facial_prior else None
        self.post_init()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" not in cls.__dict__:
            _take_base_signature(FacialPriorModelMixin, cls, "forward", (_FACIAL_PRIORS_PARAMETER,))

    # Where the base forward takes exactly one of input_ids / inputs_embeds (LLaVA, Idefics3, Gemma 3), the swapped
    # embeddings go alone and the base finds its image placeholders in them, as it does for any `inputs_embeds`
    # call. A base that also needs the ids next to the embeddings (Qwen2.5-VL's M-RoPE positions) sets this.
    facial_prior_keeps_input_ids: bool = False

    def get_facial_prior_features(self, facial_priors: torch.Tensor) -> torch.Tensor:
        """Project `(num_images, facial_prior_dim)` landmark vectors to `(num_images, hidden_size)` embeddings."""
        if self.facial_prior_projector is None:
            raise ValueError(
                "facial_priors were given, but this model was built with use_facial_prior=False (a plain LLaVA); "
                "drop the facial_priors argument or use a model trained with the facial prior"
            )
        if facial_priors.ndim != 2 or facial_priors.shape[-1] != self.config.facial_prior_dim:
            raise ValueError(
                f"facial_priors must have shape (num_images, {self.config.facial_prior_dim}) for this model "
                f"(facial_prior_backend={self.config.facial_prior_backend!r}), got {tuple(facial_priors.shape)}"
            )
        weight = self.facial_prior_projector.linear_1.weight
        return self.facial_prior_projector(self.normalize_facial_priors(facial_priors.to(weight.device, weight.dtype)))

    def normalize_facial_priors(self, facial_priors: torch.Tensor) -> torch.Tensor:
        """`(x - facial_prior_mean) / facial_prior_std` where the config sets them; unchanged where it does not.

        Raw landmark vectors differ between expressions by a few hundredths on top of a shared face shape; a model
        trained from scratch reads them far better standardised (see docs/demo_and_ablation.md).
        """
        mean, std = self.config.facial_prior_mean, self.config.facial_prior_std
        if mean is not None:
            facial_priors = facial_priors - torch.tensor(mean, dtype=facial_priors.dtype, device=facial_priors.device)
        if std is not None:
            facial_priors = facial_priors / torch.tensor(std, dtype=facial_priors.dtype, device=facial_priors.device)
        return facial_priors

    def get_facial_prior_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`(batch, seq)` mask of the `<facial_prior>` placeholders, from the ids or, without them, the embeddings."""
        token_id = self.config.facial_prior_token_id
        if input_ids is not None:
            return input_ids == token_id
        token = torch.full((), token_id, dtype=torch.long, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)

    def embed_facial_priors(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, facial_priors: torch.Tensor
    ) -> tuple[dict, torch.Tensor]:
        """Token embeddings with each prior's projection at its placeholder.

        Returns the `input_ids`/`inputs_embeds` pair to hand to the base forward, and the projected priors.
        """
        features = self.get_facial_prior_features(facial_priors)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        mask = self.get_facial_prior_mask(input_ids, inputs_embeds)
        num_priors = features.shape[0]
        torch_compilable_check(
            mask.sum() == num_priors,
            lambda: f"Got {num_priors} facial_priors but {int(mask.sum())} <facial_prior> tokens in the input; pass "
            "exactly one prior per image",
        )
        features = features.to(inputs_embeds.device, inputs_embeds.dtype)
        inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), features)
        base_inputs = {"input_ids": input_ids if self.facial_prior_keeps_input_ids else None, "inputs_embeds": inputs_embeds}
        return base_inputs, features

    def check_facial_priors_given(self, input_ids: torch.Tensor | None, inputs_embeds, kwargs: dict) -> None:
        """A prompt with images and `<facial_prior>` placeholders needs its priors: refuse to run without them.

        Only checked where the ids are about to be embedded here. Calls the base model accepts (text only, given
        `inputs_embeds`, assistant models' prefill without images) are left alone, as LLaVA leaves them.
        """
        if not self.config.use_facial_prior or input_ids is None or inputs_embeds is not None:
            return
        if not _has_visual_inputs(kwargs):
            return
        mask = input_ids == self.config.facial_prior_token_id
        torch_compilable_check(
            ~mask.any(),
            lambda: f"The input has {int(mask.sum())} <facial_prior> tokens but facial_priors is missing; pass "
            "facial_priors (one landmark vector per image) or let EmolaProcessor extract them",
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        *,
        facial_priors: torch.FloatTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        r"""
        The base model's forward, plus:

        facial_priors (`torch.FloatTensor` of shape `(num_images, config.facial_prior_dim)`, *optional*):
            One landmark vector per image (see `FacialPriorExtractor`), placed at the `<facial_prior>` tokens.
        """
        if facial_priors is None:
            self.check_facial_priors_given(input_ids, inputs_embeds, kwargs)
            outputs = super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
            return with_facial_prior(outputs, None)
        base_inputs, features = self.embed_facial_priors(input_ids, inputs_embeds, facial_priors)
        return with_facial_prior(super().forward(**base_inputs, return_dict=True, **kwargs), features)


class FacialPriorForConditionalGenerationMixin(InLibraryInitMixin):
    """The facial-prior delta on a VLM's LM-head model: the swap before the base forward, and generate plumbing.

    The inner model (`self.model`) is the family's `facial_prior_model_class` (a `FacialPriorModelMixin` class).
    """

    #: The family's inner model class, with `FacialPriorModelMixin`.
    facial_prior_model_class: type | None = None

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        # The base __init__ built its own inner model; EmoLA's replaces it, so no upstream __init__ is restated.
        # from_pretrained builds both on the meta device, where the first costs nothing.
        self.model = self.facial_prior_model_class(config)
        self.post_init()
        placeholders = [config.image_token_id] + ([config.facial_prior_token_id] if config.use_facial_prior else [])
        self.suppress_placeholder_tokens(placeholders)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" not in cls.__dict__:
            _take_base_signature(FacialPriorForConditionalGenerationMixin, cls, "forward", (_FACIAL_PRIORS_PARAMETER,))
        if "prepare_inputs_for_generation" not in cls.__dict__:
            _take_base_signature(FacialPriorForConditionalGenerationMixin, cls, "prepare_inputs_for_generation")

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        *,
        facial_priors: torch.FloatTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        r"""
        The base model's forward, plus:

        facial_priors (`torch.FloatTensor` of shape `(num_images, config.facial_prior_dim)`, *optional*):
            One landmark vector per image, placed at the `<facial_prior>` tokens.
        """
        if facial_priors is None:
            outputs = super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
            return with_facial_prior(outputs, None)
        base_inputs, features = self.model.embed_facial_priors(input_ids, inputs_embeds, facial_priors)
        return with_facial_prior(super().forward(**base_inputs, return_dict=True, **kwargs), features)

    def get_facial_prior_features(self, facial_priors: torch.Tensor) -> torch.Tensor:
        """See `FacialPriorModelMixin.get_facial_prior_features`."""
        return self.model.get_facial_prior_features(facial_priors)

    def suppress_placeholder_tokens(self, token_ids: list[int]) -> None:
        """Placeholders are inputs only: a generated `<image>`/`<facial_prior>` would ask for features nobody has."""
        suppressed = list(self.generation_config.suppress_tokens or [])
        self.generation_config.suppress_tokens = suppressed + [t for t in token_ids if t not in suppressed]

    def prepare_inputs_for_generation(
        self, input_ids, *args, inputs_embeds=None, is_first_iteration: bool | None = False, **kwargs
    ):
        """The prior, like the pixels, is read at prefill; cached decoding steps carry no placeholder."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, *args, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            model_inputs.pop("facial_priors", None)
        return model_inputs

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs
    ):
        """Repeat each sample's group of priors, in the order the expanded samples' placeholders appear.

        The generic expansion repeats rows, which is right only for one image per sample: priors are per image.
        """
        facial_priors = model_kwargs.pop("facial_priors", None)
        expanded_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )
        if facial_priors is not None and expand_size > 1:
            has_ids = input_ids is not None and input_ids.shape[-1] > 0
            per_sample = (input_ids == self.config.facial_prior_token_id).sum(-1).tolist() if has_ids else []
            if sum(per_sample) == facial_priors.shape[0]:
                groups = torch.split(facial_priors, per_sample)
                facial_priors = torch.cat([group for group in groups for _ in range(expand_size)], dim=0)
            else:  # prompt given as inputs_embeds: one image per sample
                facial_priors = facial_priors.repeat_interleave(expand_size, dim=0)
        if facial_priors is not None:
            model_kwargs["facial_priors"] = facial_priors
        return expanded_ids, model_kwargs


__all__ = [
    "EmolaFacialPriorProjector",
    "FacialPriorForConditionalGenerationMixin",
    "FacialPriorModelMixin",
    "facial_prior_output_class",
    "register_facial_prior_output",
    "with_facial_prior",
]
