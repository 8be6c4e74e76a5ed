"""`tokenizer`: text to token ids, a pre-processing stage before the tensor core.

Built on Hugging Face `tokenizers` (the Rust library), assembled exactly as `transformers`'
fast tokenizers assemble it, so the ids equal theirs for the same files:

- `file: tokenizer.json` — any saved `tokenizers` pipeline, as it is;
- `vocab: vocab.txt` — WordPiece as `BertTokenizerFast`: BERT normaliser (clean text, Chinese
  characters split, accents stripped with `lowercase`), BERT pre-tokeniser, `[CLS] A [SEP]`
  and `[CLS] A [SEP] B [SEP]` with token types 0 and 1;
- `vocab: vocab.json` + `merges: merges.txt` — byte-level BPE as `RobertaTokenizerFast`
  (`<s> A </s>`, `<s> A </s></s> B </s>`, token types all 0) or, without `<s>` in the
  vocabulary, as GPT-2's (no special tokens);
- `train: corpus.txt` — a WordPiece or BPE vocabulary of `vocab_size` trained at build time
  from a local text file, with BERT's special tokens. `tokenizers`' trainers iterate a hash
  map, so the ids can differ from one process to the next (huggingface/tokenizers#1794):
  for ids that stay put, train once and save the vocabulary (`vocab:`).

Outputs `tokens` [B, T] int64, `mask` [B, T] (1 for real tokens) and, with `token_types`,
`token_types` [B, T]. T is the dim named by `length` (default `T`): the longest text of the
batch, or `max_length` with `padding: max_length`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Sequence

import numpy as np
from pydantic import model_validator

from composer.block import Block, In
from composer.dims import sym
from composer.errors import ComposerError
from composer.params import PosInt
from composer.registry import register
from composer.types import InferError, PortType

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TextError(ComposerError):
    """A text input the tokenizer cannot take (exit code 1)."""


_CACHE: dict[tuple, Any] = {}


def _stamp(path: Optional[str]) -> tuple:
    if not path:
        return (None,)
    try:
        st = os.stat(path)
    except OSError:
        return (path, None)
    return (path, st.st_mtime_ns, st.st_size)


@register
class TokenizerBlock(Block):
    """Text to token ids with Hugging Face `tokenizers`: tokenizer.json, WordPiece vocab.txt, BPE vocab.json + merges.txt, or trained from a text file."""
    name: ClassVar[str] = "tokenizer"
    family: ClassVar[str] = "text"
    stage: ClassVar[str] = "pre"
    inputs: ClassVar = {"text": In("text", doc="[B] strings"),
                        "pair": In("text", optional=True, doc="[B] second segments (sentence pairs)")}
    outputs: ClassVar = ("tokens", "mask", "token_types")
    path_params: ClassVar = ("file", "vocab", "merges", "train")
    file: Optional[str] = None                 # tokenizer.json
    vocab: Optional[str] = None                # vocab.txt (WordPiece) or vocab.json (BPE, with merges)
    merges: Optional[str] = None               # merges.txt, with a vocab.json
    train: Optional[str] = None                # a text file to train a vocabulary from at build time
    model: Literal["wordpiece", "bpe"] = "wordpiece"   # what `train` trains
    vocab_size: PosInt = 1000                  # the size `train` aims for
    lowercase: bool = True                     # WordPiece normalisation (BERT uncased)
    max_length: PosInt = 512
    truncation: bool = False                   # cut longer texts to max_length (else: an error)
    padding: Literal["longest", "max_length"] = "longest"
    special_tokens: bool = True                # [CLS]/[SEP] (or <s>/</s>) around each text
    token_types: bool = True                   # output `token_types` (segment ids)
    length: str = "T"                          # the dim name of the sequence length

    @model_validator(mode="after")
    def _one_source(self):
        given = [n for n in ("file", "vocab", "train") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of `file` (tokenizer.json), `vocab` (vocab.txt, or vocab.json with "
                             f"`merges`) or `train` (a text file); got {', '.join(given) or 'none'}")
        if self.merges and not (self.vocab or "").endswith(".json"):
            raise ValueError("`merges` goes with a BPE `vocab: vocab.json`")
        if (self.vocab or "").endswith(".json") and not self.merges:
            raise ValueError("a BPE `vocab: vocab.json` needs its `merges: merges.txt`")
        return self

    # ---- the tokenizers pipeline ----------------------------------------------------------

    def tokenizer(self):
        """The configured `tokenizers.Tokenizer` (cached while its files are unchanged)."""
        key = (self.file, self.vocab, self.merges, self.train, self.model, self.vocab_size, self.lowercase,
               self.special_tokens, *_stamp(self.file or self.vocab or self.train), *_stamp(self.merges))
        if key not in _CACHE:
            _CACHE[key] = self._make()
        return _CACHE[key]

    def _make(self):
        from tokenizers import Tokenizer
        which = "file" if self.file else "vocab" if self.vocab else "train"
        path = getattr(self, which)
        try:
            if self.file:
                tok = Tokenizer.from_file(self.file)
            elif self.vocab and self.vocab.endswith(".json"):
                tok = _byte_level_bpe(self.vocab, self.merges, self.special_tokens)
            elif self.vocab:
                tok = _wordpiece(self.vocab, self.lowercase, self.special_tokens)
            else:
                tok = _trained(self.train, self.model, self.vocab_size, self.lowercase, self.special_tokens)
        except InferError:
            raise
        except BaseException as exc:   # the Rust library raises its own types, and panics as BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            raise InferError(f"cannot read tokenizer {which} {path}: {first}", param=which,
                             expected="a tokenizer.json, a WordPiece vocab.txt or a BPE vocab.json",
                             found=type(exc).__name__) from None
        tok.no_padding()
        tok.no_truncation()
        return tok

    # ---- types ----------------------------------------------------------------------------

    def infer(self, text: PortType, pair: Optional[PortType] = None) -> dict[str, PortType]:
        for port, t in (("text", text), ("pair", pair)):
            if t is not None and (t.kind != "text" or t.shape is None or len(t.shape) != 1):
                raise InferError(f"port `{port}` takes text, a [B] batch of strings", port=port,
                                 expected="kind text, shape [B]", found=str(t))
        b = text.shape[0]
        t_dim = self.max_length if self.padding == "max_length" else sym(self.length)
        vocab = self.tokenizer().get_vocab_size(with_added_tokens=True)
        ids = PortType("tokens", (b, t_dim), "int64", meta=(("vocab", vocab),))
        out = {"tokens": ids, "mask": PortType("mask", (b, t_dim), "int64")}
        if self.token_types:
            out["token_types"] = PortType("tokens", (b, t_dim), "int64", meta=(("vocab", 2),))
        return out

    def param_count(self, **inputs: PortType) -> int:
        return 0

    def build(self, **inputs: PortType):
        raise ComposerError("the tokenizer is a pre-processing stage: it runs before the model, not in it")

    def build_stage(self, text: PortType, pair: Optional[PortType] = None):
        return _Stage(self)


class _Stage:
    """The tokenizer at run time: a batch of texts (and pairs) -> tokens, mask, token_types."""

    def __init__(self, block: TokenizerBlock):
        self.block = block
        self.tok = block.tokenizer()
        pad = next((t for t in ("[PAD]", "<pad>") if self.tok.token_to_id(t) is not None), None)
        self.pad_id = self.tok.token_to_id(pad) if pad else 0
        self.pad_token = pad or "[PAD]"

    def __call__(self, text, pair=None) -> dict[str, np.ndarray]:
        b = self.block
        texts = _texts(text, "text")
        pairs = _texts(pair, "pair") if pair is not None else None
        if pairs is not None and len(pairs) != len(texts):
            raise TextError(f"input `pair` has {len(pairs)} texts and `text` {len(texts)}: give one pair per text")
        tok = self.tok
        if b.truncation:
            tok.enable_truncation(b.max_length)
        else:
            tok.no_truncation()
        tok.no_padding()
        items = list(zip(texts, pairs)) if pairs is not None else texts
        encodings = tok.encode_batch(items, add_special_tokens=b.special_tokens)
        if not b.truncation:
            for i, e in enumerate(encodings):
                if len(e.ids) > b.max_length:
                    raise TextError(f"text {i} of input `text` is {len(e.ids)} tokens long, more than max_length "
                                    f"{b.max_length}; set `truncation: true` on the tokenizer to cut it")
        length = b.max_length if b.padding == "max_length" else max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros((len(encodings), length), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = e.attention_mask
            types[i, :n] = e.type_ids
        out = {"tokens": ids, "mask": mask}
        if b.token_types:
            out["token_types"] = types
        return out


def _texts(value, port: str) -> list[str]:
    """A batch of strings, each non-empty valid text."""
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else None
    if not items:
        raise TextError(f"input `{port}` needs at least one text")
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise TextError(f"text {i} of input `{port}` is a {type(s).__name__}, not a string")
        if not s.strip():
            raise TextError(f"text {i} of input `{port}` is empty")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise TextError(f"text {i} of input `{port}` is not valid UTF-8") from None
    return items


def _wordpiece(vocab: str, lowercase: bool, special: bool):
    from tokenizers import Tokenizer, models
    tok = Tokenizer(models.WordPiece.from_file(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    # BertTokenizerFast's special tokens: kept whole in the text ("[MASK]" is one token), never lowercased
    tok.add_special_tokens([t for t in SPECIALS if tok.token_to_id(t) is not None])
    _bert_pipeline(tok, lowercase, special)
    return tok


def _bert_pipeline(tok, lowercase: bool, special: bool) -> None:
    """BertTokenizerFast's normaliser, pre-tokeniser, template and decoder."""
    from tokenizers import decoders, normalizers, pre_tokenizers, processors
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if special:
        if cls is None or sep is None:
            raise InferError("the WordPiece vocabulary has no [CLS] or [SEP] token", param="special_tokens",
                             expected="[CLS] and [SEP] in the vocabulary", found="missing",
                             hint="set `special_tokens: false`, or add them to the vocabulary")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])


def _byte_level_bpe(vocab: str, merges: str, special: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    ids = json.loads(Path(vocab).read_text(encoding="utf-8"))
    if special and "<s>" in ids and "</s>" in ids:       # RoBERTa's layout
        tok.post_processor = processors.RobertaProcessing(("</s>", ids["</s>"]), ("<s>", ids["<s>"]),
                                                          trim_offsets=True, add_prefix_space=False)
        tok.add_special_tokens([t for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if t in ids])
    else:                                                 # GPT-2's: no special tokens around the text
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _trained(corpus: str, model: str, vocab_size: int, lowercase: bool, special: bool):
    from tokenizers import Tokenizer, models, trainers
    try:
        Path(corpus).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InferError(f"training text {corpus} is not valid UTF-8 (byte {exc.start})", param="train",
                         expected="a UTF-8 text file", found="undecodable bytes") from None
    if model == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    from tokenizers import normalizers, pre_tokenizers
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train([corpus], trainer)
    _bert_pipeline(tok, lowercase, special)
    if model == "bpe":
        from tokenizers import decoders
        tok.decoder = decoders.BPEDecoder()
    return tok
