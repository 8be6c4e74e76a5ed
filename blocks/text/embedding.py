"""Token embeddings: word + position (+ token type) tables, LayerNorm, dropout, optional projection.

One block covers BERT, RoBERTa, ALBERT, ELECTRA and DistilBERT embeddings; they differ only in
params (how positions are numbered, whether there is a token-type table, a factorised
projection). Besides the sequence it outputs the word table itself (kind `weight`), so an MLM
head ties its decoder to it through an edge of the spec, not a hidden alias.

Parameter names: `word`, `position` (learned positions), `token_type`, `norm`, `projection`.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from composer.block import Block, In
from composer.params import Eps, NonNegInt, PosInt, Prob
from composer.registry import register
from composer.types import InferError, PortType, expect_rank, unify_shapes

from ..sequence.positional import sinusoidal_encoding
from .common import expect_ids, init_like_bert


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """The Transformer's fixed positions: sin(p / 10000^(2i/d)) on even dims, cos on odd ones
    (computed in float64, stored in float32)."""
    return sinusoidal_encoding(positions, dim, dtype=torch.float64).float()


class Embeddings(nn.Module):
    """(tokens[, token_types][, mask]) -> (sequence (B, T, E or projection), word table (V, E))."""

    def __init__(self, vocab_size: int, dim: int, max_positions: int, positions: str, position_ids: str,
                 padding_idx: Optional[int], pad_token_id: Optional[int], type_vocab_size: int, norm: bool,
                 eps: float, dropout: float, projection: Optional[int], tied: bool = False):
        super().__init__()
        # tied: the word table comes in on the `table` port (a decoder sharing its encoder's, T5)
        self.word = None if tied else nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.offset = position_ids == "padding_offset"
        self.from_mask = position_ids == "from_mask"
        self.padding_idx = padding_idx if self.offset else None
        # RoBERTa takes the pad positions from the ids when no mask is given (its pad id is padding_idx)
        self.pad_id = pad_token_id if pad_token_id is not None else padding_idx
        self.positions = positions
        if positions == "learned":
            self.position = nn.Embedding(max_positions, dim, padding_idx=self.padding_idx)
        elif positions == "sinusoidal":
            self.register_buffer("sinusoid", sinusoid_table(max_positions, dim), persistent=False)
        self.token_type = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.norm = nn.LayerNorm(dim, eps=eps) if norm else None
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(dim, projection) if projection is not None else None

    def _position_table(self) -> torch.Tensor:
        return self.position.weight if self.positions == "learned" else self.sinusoid

    def forward(self, tokens: torch.Tensor, token_types: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None, past_mask: Optional[torch.Tensor] = None,
                table: Optional[torch.Tensor] = None):
        if table is None:
            table = self.word.weight                                             # (V, E)
            x = self.word(tokens)                                                # (B, T, E)
        else:
            x = nn.functional.embedding(tokens, table)                           # (B, T, E)
        if self.token_type is not None:
            x = x + (self.token_type(token_types) if token_types is not None else self.token_type.weight[0])
        if self.positions != "none":
            if self.from_mask:
                # GPT-2's generate: a token's position counts the real tokens before it, cached ones
                # included (left pads do not shift a prompt); pads themselves sit at 1
                keep = (mask != 0).to(torch.int64) if mask is not None else torch.ones_like(tokens)   # (B, T)
                ids = torch.cumsum(keep, dim=1) - 1
                if past_mask is not None:
                    ids = ids + (past_mask != 0).to(torch.int64).sum(dim=1, keepdim=True)
                ids = torch.where(keep == 0, torch.ones_like(ids), ids)
                x = x + nn.functional.embedding(ids, self._position_table())     # (B, T, E)
            elif self.offset:
                # RoBERTa: real tokens count from padding_idx + 1, pads sit at padding_idx
                keep = (mask != 0) if mask is not None else tokens.ne(self.pad_id)
                keep = keep.to(torch.int64)                                      # (B, T)
                ids = torch.cumsum(keep, dim=1) * keep + self.padding_idx
                # the learned table's padding row gets no gradient, as in RoBERTa
                learned = self.positions == "learned"
                x = x + (self.position(ids) if learned else nn.functional.embedding(ids, self.sinusoid))  # (B, T, E)
            else:
                x = x + self._position_table()[: tokens.shape[1]]                # (T, E) over the batch
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        if self.projection is not None:
            x = self.projection(x)                                               # (B, T, projection)
        return x, table


@register
class Embedding(Block):
    """Token embeddings (BERT/RoBERTa/ALBERT/ELECTRA layout): word + position (+ type), norm, projection."""
    name: ClassVar[str] = "embedding"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {
        "tokens": In("tokens", doc="[B, T] int64 ids"),
        "token_types": In("tokens", doc="[B, T] segment ids (all 0 when unbound)", optional=True),
        "mask": In("mask", doc="[B, T] 1 for real tokens: numbers padding_offset and from_mask positions",
                   optional=True),
        "past_mask": In("mask", doc="[B, P] the real tokens of earlier steps (from_mask: positions count on after them)",
                        optional=True),
        "table": In("weight", doc="[V, E] another embedding's word table to look the tokens up in (shared: T5's "
                                  "encoder and decoder)", optional=True),
    }
    outputs: ClassVar = ("sequence", "table")
    example: ClassVar = {
        "params": {"vocab_size": 11, "dim": 8, "max_positions": 16, "type_vocab_size": 4,
                   "position_ids": "padding_offset", "padding_idx": 1, "projection": 6},
        "inputs": {"tokens": PortType("tokens", (2, 5), "int64"), "token_types": PortType("tokens", (2, 5), "int64"),
                   "mask": PortType("mask", (2, 5), "int64")},
    }
    vocab_size: PosInt
    dim: PosInt                                   # the embedding size (ALBERT/ELECTRA: embedding_size)
    max_positions: PosInt = 512                   # rows of the position table (RoBERTa: 514, offset included)
    positions: Literal["learned", "sinusoidal", "none"] = "learned"
    position_ids: Literal["arange", "padding_offset", "from_mask"] = "arange"   # from_mask: GPT-2 decoding
    padding_idx: Optional[NonNegInt] = None       # padding_offset: pads get it, real tokens padding_idx + 1, ...
    pad_token_id: Optional[NonNegInt] = None      # the word table's padding row (zero, no gradient)
    type_vocab_size: NonNegInt = 0                # 0: no token-type table
    norm: bool = True
    eps: Eps = 1e-12
    dropout: Prob = 0.0
    projection: Optional[PosInt] = None           # factorised embeddings: a Linear dim -> projection after the norm

    def _check(self, tokens: PortType, token_types: Optional[PortType], mask: Optional[PortType],
               past_mask: Optional[PortType] = None, table: Optional[PortType] = None) -> None:
        expect_ids(tokens, "tokens")
        if table is not None and tuple(table.shape) != (self.vocab_size, self.dim):
            raise InferError("the shared word table does not have this embedding's size", port="table",
                             code="E302", expected=f"[{self.vocab_size}, {self.dim}] (vocab_size, dim)",
                             found=str(table), hint="set `vocab_size` and `dim` to the table's")
        for port, t, size, param in (("tokens", tokens, self.vocab_size, "vocab_size"),
                                     ("token_types", token_types, self.type_vocab_size, "type_vocab_size")):
            made = t.get("vocab") if t is not None else None      # how many ids a tokenizer makes
            if made is not None and size and made > size:
                raise InferError(f"port `{port}` gets ids up to {made - 1} from its tokenizer, but the table has "
                                 f"{size} rows", param=param, code="E302", expected=f"{param} >= {made}",
                                 found=str(size), hint=f"set `{param}: {made}` (or more), or use a smaller vocabulary")
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise InferError(f"pad_token_id {self.pad_token_id} is not in a vocabulary of {self.vocab_size}",
                             param="pad_token_id", code="E302", expected=f"below {self.vocab_size}",
                             found=str(self.pad_token_id))
        if token_types is not None:
            if not self.type_vocab_size:
                raise InferError("`token_types` is connected but there is no token-type table", port="token_types",
                                 code="E302", expected="type_vocab_size > 0", found="type_vocab_size 0",
                                 hint="set `type_vocab_size` (BERT: 2), or leave `token_types` unconnected")
            expect_ids(token_types, "token_types")
            unify_shapes([("tokens", tokens), ("token_types", token_types)])
        if mask is not None:
            expect_rank(mask, 2, "mask", " [B, T]")
            unify_shapes([("tokens", tokens), ("mask", mask)])
        if past_mask is not None:
            if self.position_ids != "from_mask":
                raise InferError("`past_mask` numbers positions only with `position_ids: from_mask`",
                                 port="past_mask", code="E302", expected="position_ids: from_mask",
                                 found=f"position_ids: {self.position_ids}")
            expect_rank(past_mask, 2, "past_mask", " [B, P]")
            unify_shapes([("tokens", PortType("tokens", tokens.shape[:1])),
                          ("past_mask", PortType("mask", past_mask.shape[:1]))])
        if self.positions == "none":
            return
        offset = 0
        if self.position_ids == "padding_offset":
            if self.padding_idx is None:
                raise InferError("padding_offset positions need `padding_idx`", param="position_ids", code="E302",
                                 expected="padding_idx (RoBERTa: 1)", found="padding_idx unset")
            offset = self.padding_idx + 1
            if offset >= self.max_positions:
                raise InferError(f"padding_idx {self.padding_idx} leaves no room in a table of {self.max_positions} "
                                 "positions", param="padding_idx", expected=f"below {self.max_positions - 1}",
                                 found=str(self.padding_idx))
        t = tokens.shape[1]
        if isinstance(t, int) and t + offset > self.max_positions:
            limit = self.max_positions - offset
            raise InferError(f"sequences of {t} tokens are longer than the {limit} positions the table holds",
                             param="max_positions", code="E302", expected=f"at most {limit} tokens",
                             found=f"T = {t}", hint="raise `max_positions`, or truncate the input")

    def infer(self, tokens: PortType, token_types: Optional[PortType] = None, mask: Optional[PortType] = None,
              past_mask: Optional[PortType] = None, table: Optional[PortType] = None) -> dict[str, PortType]:
        self._check(tokens, token_types, mask, past_mask, table)
        b, t = tokens.shape
        return {"sequence": PortType("sequence", (b, t, self.projection or self.dim)),
                "table": PortType("weight", (self.vocab_size, self.dim))}

    def id_high(self, port: str) -> Optional[int]:
        """How many ids each input port takes (random inputs stay below it)."""
        return {"tokens": self.vocab_size, "token_types": self.type_vocab_size or 1}.get(port)

    def param_count(self, tokens: PortType, token_types: Optional[PortType] = None, mask: Optional[PortType] = None,
                    past_mask: Optional[PortType] = None, table: Optional[PortType] = None) -> int:
        n = ((0 if table is not None else self.vocab_size) + self.type_vocab_size) * self.dim
        n += self.max_positions * self.dim if self.positions == "learned" else 0
        n += 2 * self.dim if self.norm else 0
        n += (self.dim + 1) * self.projection if self.projection else 0
        return n

    def build(self, tokens: PortType, token_types: Optional[PortType] = None, mask: Optional[PortType] = None,
              past_mask: Optional[PortType] = None, table: Optional[PortType] = None) -> nn.Module:
        self._check(tokens, token_types, mask, past_mask, table)
        return init_like_bert(Embeddings(
            self.vocab_size, self.dim, self.max_positions, self.positions, self.position_ids, self.padding_idx,
            self.pad_token_id, self.type_vocab_size, self.norm, self.eps, self.dropout, self.projection,
            tied=table is not None))



class WordTable(nn.Module):
    """A [V, E] word table as a parameter of its own (`weight`), for embeddings and heads to share."""

    def __init__(self, vocab_size: int, dim: int, std: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim).normal_(0.0, std))

    def forward(self) -> torch.Tensor:
        return self.weight


@register
class WordTableBlock(Block):
    """A word table [V, E] that several blocks share through their `table` input: T5's encoder and
    decoder embeddings and its tied LM head read one matrix (`shared` in its checkpoints)."""
    name: ClassVar[str] = "word_table"
    family: ClassVar[str] = "text"
    inputs: ClassVar = {}
    example: ClassVar = {"params": {"vocab_size": 11, "dim": 8}, "inputs": {}}
    vocab_size: PosInt
    dim: PosInt
    std: float = 1.0                  # T5 initialises its shared table N(0, 1)

    def infer(self) -> PortType:
        return PortType("weight", (self.vocab_size, self.dim))

    def param_count(self) -> int:
        return self.vocab_size * self.dim

    def build(self) -> nn.Module:
        return WordTable(self.vocab_size, self.dim, self.std)
