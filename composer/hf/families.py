"""The family table: per Hugging Face `model_type`, the config fields of each param, how positions
are numbered, and the rename rules of the base model and of each architecture's head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import ComposerError

Rules = tuple[tuple[str, str], ...]


class HFImportError(ComposerError):
    """A Hugging Face folder that cannot become a spec (exit code 1)."""


@dataclass(frozen=True)
class Head:
    """What an architecture adds to the base model.

    kind: `base` (no head), `pooled_classifier` (the pooler, then a linear classifier: BERT,
    ALBERT), `classifier` (dense, activation, out on the first token: RoBERTa, ELECTRA,
    DistilBERT), `tokens` (a linear classifier per token), `mlm` (the masked-LM head, its
    decoder tied to the word table) or `discriminator` (ELECTRA's replaced-token head)."""

    kind: str
    rename: Rules = ()
    ignore: tuple[str, ...] = ()          # head keys the spec has no place for (a tied decoder)
    activation: Optional[str] = None      # the head's fixed activation; None: the config's own


@dataclass(frozen=True)
class Family:
    """One `model_type`: how its config.json reads and how its checkpoint keys map.

    In rename and ignore rules `{p}` stands for the base model's prefix in task checkpoints
    (`bert\\.`), or nothing when the folder holds a bare base model."""

    model_type: str
    title: str
    prefix: str                           # base_model_prefix: task checkpoints nest the base model under it
    modules: tuple[str, ...]              # the base model's top-level modules (in a checkpoint without prefix)
    fields: Mapping[str, str]             # our name -> config.json key
    defaults: Mapping[str, Any]           # transformers' defaults, for keys a config.json leaves out
    fixed: Mapping[str, Any] = field(default_factory=dict)   # values the family does not configure
    positions: str = "arange"             # `padding_offset`: RoBERTa numbers positions after padding_idx
    projection: str = "never"             # `always` (ALBERT), `if_differs` (ELECTRA: embedding_size != hidden)
    token_types: bool = True              # the embedding takes the tokenizer's segment ids
    rename: Rules = ()                    # the base model: embeddings and encoder
    pooler: Rules = ()                    # the pooler's rules; () for a family without one
    ignore: tuple[str, ...] = ()          # base-model keys that are no weights (position_ids buffers)
    heads: Mapping[str, Head] = field(default_factory=dict)   # architecture -> head

    @property
    def base(self) -> str:
        return next(a for a, h in self.heads.items() if h.kind == "base")


_BUFFERS = (r"^{p}embeddings\.position_ids$", r"^{p}embeddings\.token_type_ids$")
_EMBEDDINGS: Rules = (
    (r"^{p}embeddings\.(word|position|token_type)_embeddings\.", r"emb.\1."),
    (r"^{p}embeddings\.LayerNorm\.", "emb.norm."),
)
_L = r"^{p}encoder\.layer\.(\d+)\."
_BERT_LAYERS: Rules = (
    (_L + r"attention\.self\.(query|key|value)\.", r"encoder.layers.\1.self_attention.\2."),
    (_L + r"attention\.output\.dense\.", r"encoder.layers.\1.self_attention.out_proj."),
    (_L + r"attention\.output\.LayerNorm\.", r"encoder.layers.\1.ln_1."),
    (_L + r"intermediate\.dense\.", r"encoder.layers.\1.mlp.0."),
    (_L + r"output\.dense\.", r"encoder.layers.\1.mlp.3."),
    (_L + r"output\.LayerNorm\.", r"encoder.layers.\1.ln_2."),
)
_A = r"^{p}encoder\.albert_layer_groups\.(\d+)\.albert_layers\.0\."
_ALBERT_LAYERS: Rules = (
    (r"^{p}encoder\.embedding_hidden_mapping_in\.", "emb.projection."),
    (_A + r"attention\.(query|key|value)\.", r"encoder.layers.\1.self_attention.\2."),
    (_A + r"attention\.dense\.", r"encoder.layers.\1.self_attention.out_proj."),
    (_A + r"attention\.LayerNorm\.", r"encoder.layers.\1.ln_1."),
    (_A + r"ffn\.", r"encoder.layers.\1.mlp.0."),
    (_A + r"ffn_output\.", r"encoder.layers.\1.mlp.3."),
    (_A + r"full_layer_layer_norm\.", r"encoder.layers.\1.ln_2."),
)
_D = r"^{p}transformer\.layer\.(\d+)\."
_DISTILBERT_LAYERS: Rules = (
    (_D + r"attention\.q_lin\.", r"encoder.layers.\1.self_attention.query."),
    (_D + r"attention\.k_lin\.", r"encoder.layers.\1.self_attention.key."),
    (_D + r"attention\.v_lin\.", r"encoder.layers.\1.self_attention.value."),
    (_D + r"attention\.out_lin\.", r"encoder.layers.\1.self_attention.out_proj."),
    (_D + r"sa_layer_norm\.", r"encoder.layers.\1.ln_1."),
    (_D + r"ffn\.lin1\.", r"encoder.layers.\1.mlp.0."),
    (_D + r"ffn\.lin2\.", r"encoder.layers.\1.mlp.3."),
    (_D + r"output_layer_norm\.", r"encoder.layers.\1.ln_2."),
)
_CLASSIFIER_OUT: Rules = ((r"^classifier\.", "head.out."),)
_CLASSIFIER_HIDDEN: Rules = ((r"^classifier\.(dense|out_proj)\.", r"head.\1."),)


def _mlm(module: str, dense: str, norm: str, bias: str) -> Rules:
    return ((rf"^{module}{dense}\.", "head.transform.dense."), (rf"^{module}{norm}\.", "head.transform.norm."),
            (rf"^{module}{bias}$", "head.bias"))


_BERT_FIELDS = {
    "vocab_size": "vocab_size", "hidden": "hidden_size", "layers": "num_hidden_layers",
    "heads": "num_attention_heads", "mlp": "intermediate_size", "activation": "hidden_act",
    "eps": "layer_norm_eps", "max_positions": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
    "pad_token_id": "pad_token_id", "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob", "classifier_dropout": "classifier_dropout",
}
_BERT_DEFAULTS = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
    "type_vocab_size": 2, "pad_token_id": 0, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
}

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family(
        "bert", "BERT", "bert", ("embeddings", "encoder", "pooler"), _BERT_FIELDS, _BERT_DEFAULTS,
        rename=_EMBEDDINGS + _BERT_LAYERS, pooler=((r"^{p}pooler\.dense\.", "pooler."),), ignore=_BUFFERS,
        heads={
            "BertModel": Head("base"),
            "BertForSequenceClassification": Head("pooled_classifier", _CLASSIFIER_OUT),
            "BertForTokenClassification": Head("tokens", _CLASSIFIER_OUT),
            "BertForMaskedLM": Head("mlm", _mlm(r"cls\.predictions\.", r"transform\.dense", r"transform\.LayerNorm",
                                                "bias"), ignore=(r"^cls\.predictions\.decoder\.",)),
        }),
    Family(
        "roberta", "RoBERTa", "roberta", ("embeddings", "encoder", "pooler"), _BERT_FIELDS,
        {**_BERT_DEFAULTS, "vocab_size": 50265, "pad_token_id": 1}, positions="padding_offset", token_types=False,
        rename=_EMBEDDINGS + _BERT_LAYERS, pooler=((r"^{p}pooler\.dense\.", "pooler."),), ignore=_BUFFERS,
        heads={
            "RobertaModel": Head("base"),
            "RobertaForSequenceClassification": Head("classifier", _CLASSIFIER_HIDDEN, activation="tanh"),
            "RobertaForTokenClassification": Head("tokens", _CLASSIFIER_OUT),
            "RobertaForMaskedLM": Head("mlm", _mlm(r"lm_head\.", "dense", "layer_norm", "bias"),
                                       ignore=(r"^lm_head\.decoder\.",), activation="gelu"),
        }),
    Family(
        "albert", "ALBERT", "albert", ("embeddings", "encoder", "pooler"),
        {**_BERT_FIELDS, "embedding_size": "embedding_size", "classifier_dropout": "classifier_dropout_prob",
         "groups": "num_hidden_groups", "inner_groups": "inner_group_num"},
        {**_BERT_DEFAULTS, "vocab_size": 30000, "embedding_size": 128, "hidden_size": 4096, "num_attention_heads": 64,
         "intermediate_size": 16384, "hidden_act": "gelu_new", "hidden_dropout_prob": 0.0,
         "attention_probs_dropout_prob": 0.0, "classifier_dropout_prob": 0.1, "num_hidden_groups": 1,
         "inner_group_num": 1},
        projection="always", rename=_EMBEDDINGS + _ALBERT_LAYERS, pooler=((r"^{p}pooler\.", "pooler."),),
        ignore=_BUFFERS,
        heads={
            "AlbertModel": Head("base"),
            "AlbertForSequenceClassification": Head("pooled_classifier", _CLASSIFIER_OUT),
            "AlbertForTokenClassification": Head("tokens", _CLASSIFIER_OUT),
            "AlbertForMaskedLM": Head("mlm", _mlm(r"predictions\.", "dense", "LayerNorm", "bias"),
                                      ignore=(r"^predictions\.decoder\.",)),
        }),
    Family(
        "electra", "ELECTRA", "electra", ("embeddings", "embeddings_project", "encoder"),
        {**_BERT_FIELDS, "embedding_size": "embedding_size"},
        {**_BERT_DEFAULTS, "embedding_size": 128, "hidden_size": 256, "num_attention_heads": 4,
         "intermediate_size": 1024},
        projection="if_differs", rename=_EMBEDDINGS + ((r"^{p}embeddings_project\.", "emb.projection."),)
        + _BERT_LAYERS, ignore=_BUFFERS,
        heads={
            "ElectraModel": Head("base"),
            "ElectraForPreTraining": Head("discriminator",
                                          ((r"^discriminator_predictions\.(dense|dense_prediction)\.", r"head.\1."),)),
            "ElectraForSequenceClassification": Head("classifier", _CLASSIFIER_HIDDEN, activation="gelu"),
            "ElectraForTokenClassification": Head("tokens", _CLASSIFIER_OUT),
            "ElectraForMaskedLM": Head("mlm", _mlm("generator_", r"predictions\.dense", r"predictions\.LayerNorm",
                                                   r"lm_head\.bias"),
                                       ignore=(r"^generator_lm_head\.weight$",), activation="gelu"),
        }),
    Family(
        "distilbert", "DistilBERT", "distilbert", ("embeddings", "transformer"),
        {"vocab_size": "vocab_size", "hidden": "dim", "layers": "n_layers", "heads": "n_heads", "mlp": "hidden_dim",
         "activation": "activation", "max_positions": "max_position_embeddings", "pad_token_id": "pad_token_id",
         "dropout": "dropout", "attention_dropout": "attention_dropout", "classifier_dropout": "seq_classif_dropout",
         "sinusoidal": "sinusoidal_pos_embds"},
        {"vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "activation": "gelu",
         "max_position_embeddings": 512, "pad_token_id": 0, "dropout": 0.1, "attention_dropout": 0.1,
         "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": False},
        fixed={"eps": 1e-12, "type_vocab_size": 0}, token_types=False,
        rename=((r"^{p}embeddings\.(word|position)_embeddings\.", r"emb.\1."), _EMBEDDINGS[1]) + _DISTILBERT_LAYERS,
        ignore=_BUFFERS,
        heads={
            "DistilBertModel": Head("base"),
            "DistilBertForSequenceClassification": Head(
                "classifier", ((r"^pre_classifier\.", "head.dense."), (r"^classifier\.", "head.out_proj.")),
                activation="relu"),
            "DistilBertForTokenClassification": Head("tokens", _CLASSIFIER_OUT),
            "DistilBertForMaskedLM": Head("mlm", _mlm("vocab_", "transform", "layer_norm", r"projector\.bias"),
                                          ignore=(r"^vocab_projector\.weight$",)),
        }),
)}

@dataclass(frozen=True)
class DecoderFamily:
    """One `model_type` of the generative families (GPT-2, T5, XLNet): how its config.json reads
    and which architectures import. Their spec writers and weight rules are in composer.hf.decoders
    (the blocks differ per family, so there is no shared layout as for the encoders).

    heads: architecture -> `base` (the base model: its hidden states), `lm` (with the LM head) or
    `encoder` (T5's encoder alone)."""

    model_type: str
    title: str
    prefix: str                           # base_model_prefix: task checkpoints nest the base model under it
    modules: tuple[str, ...]              # the base model's top-level modules (in a checkpoint without prefix)
    fields: Mapping[str, str]             # our name -> config.json key
    defaults: Mapping[str, Any]           # transformers' defaults, for keys a config.json leaves out
    heads: Mapping[str, str]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    token_types: bool = False             # the tokenizer's segment ids are not used

    @property
    def base(self) -> str:
        return next(a for a, h in self.heads.items() if h == "base")


DECODER_FAMILIES: dict[str, DecoderFamily] = {f.model_type: f for f in (
    DecoderFamily(
        "gpt2", "GPT-2", "transformer", ("wte", "wpe", "h", "ln_f"),
        {"vocab_size": "vocab_size", "hidden": "n_embd", "layers": "n_layer", "heads": "n_head",
         "activation": "activation_function", "eps": "layer_norm_epsilon", "max_positions": "n_positions",
         "dropout": "resid_pdrop", "attention_dropout": "attn_pdrop", "embedding_dropout": "embd_pdrop"},
        {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
         "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
         "layer_norm_epsilon": 1e-5},
        {"GPT2Model": "base", "GPT2LMHeadModel": "lm"}),
    DecoderFamily(
        "t5", "T5", "", ("shared", "encoder", "decoder"),
        {"vocab_size": "vocab_size", "hidden": "d_model", "layers": "num_layers", "heads": "num_heads", "mlp": "d_ff",
         "head_dim": "d_kv", "num_buckets": "relative_attention_num_buckets",
         "max_distance": "relative_attention_max_distance", "activation": "feed_forward_proj",
         "eps": "layer_norm_epsilon", "dropout": "dropout_rate"},
        {"vocab_size": 32128, "d_model": 512, "num_layers": 6, "num_heads": 8, "d_ff": 2048, "d_kv": 64,
         "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "feed_forward_proj": "relu",
         "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1},
        {"T5Model": "base", "T5ForConditionalGeneration": "lm", "T5EncoderModel": "encoder"}),
    DecoderFamily(
        "xlnet", "XLNet", "transformer", ("word_embedding", "mask_emb", "layer"),
        {"vocab_size": "vocab_size", "hidden": "d_model", "layers": "n_layer", "heads": "n_head", "mlp": "d_inner",
         "activation": "ff_activation", "eps": "layer_norm_eps", "dropout": "dropout"},
        {"vocab_size": 32000, "d_model": 1024, "n_layer": 24, "n_head": 16, "d_inner": 4096, "ff_activation": "gelu",
         "layer_norm_eps": 1e-12, "dropout": 0.1},
        {"XLNetModel": "base", "XLNetLMHeadModel": "lm"}),
)}

# transformers' activation names -> the encoder's (`transformer_encoder.activation`)
ENCODER_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
# -> the heads' (`composer.params.Activation`)
HEAD_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "tanh": "tanh", "sigmoid": "sigmoid",
                    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json + merges.txt")
